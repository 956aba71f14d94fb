"""Load benchmark of Tollgate's Check against a same-stack gRPC floor: `make bench` (see README.md)."""
