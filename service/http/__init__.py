"""The HTTP transport: Tollgate's OAuth 2 endpoints (Starlette on uvicorn), one module per RFC."""
