"""Coverage-guided fuzz targets (atheris/libFuzzer) for the four surfaces a client reaches:
native Check (`tests.fuzz.check`), Envoy ext_authz (`tests.fuzz.ext_authz`), ManageRelation
(`tests.fuzz.manage_relation`) and the OAuth endpoints over HTTP (`tests.fuzz.token_endpoint`).

Each target starts a real Tollgate server in-process (port 0, SQLite in a temp dir, seeded by
tests/support/world.py) with the `service` package and PyJWT instrumented, and calls it over a real
gRPC channel (the token endpoint target: over HTTP). Every input is used twice: as the serialized request itself, and as a recipe read
with atheris.FuzzedDataProvider. The invariants are in harness.py; a broken one raises, which
libFuzzer records as a crash.

    make fuzz                                   # every target, FUZZ_SECONDS each
    .venv/bin/python -m tests.fuzz.check -max_total_time=60 /tmp/new-inputs tests/fuzz/corpus/check

Give a scratch directory first: libFuzzer writes the inputs it finds into the first corpus
directory, and the committed seeds (tests/fuzz/corpus/<target>, made by make_corpus.py) stay as they are.
"""
