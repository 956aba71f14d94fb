"""The pure decision core: standard library only, no gRPC, no SQL, no JWT library."""
