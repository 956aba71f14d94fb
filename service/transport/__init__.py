"""The only place that imports grpc and generated/: thin servicers, pure conversions, one error table."""
