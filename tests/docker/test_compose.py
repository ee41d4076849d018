"""The production stack, checked without a Docker engine: the compose file parses, and every image, build,
command, environment variable and volume it names exists in the repository, the CLI or the docs; its
defaults are safe (no default secrets, published ports on 127.0.0.1 unless configured)."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from marketmood.cli import cli
from marketmood.dashboards import render
from marketmood.dashboards.provisioning import DASHBOARDS_MOUNT, PASSWORD_ENV
from marketmood.settings import REPO_ROOT, Settings, load_settings

DOCKER = REPO_ROOT / "docker"
COMPOSE = DOCKER / "docker-compose.yml"
DOCS = REPO_ROOT / "docs" / "operations.md"
ENV_EXAMPLE = DOCKER / ".env.example"
# ${VAR}, ${VAR:-default} / ${VAR-default}, ${VAR:?message} / ${VAR?message}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
_SECRET = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY\b|APIKEY", re.IGNORECASE)
# Secret-named variables whose default grants nothing: an empty token list disables API writes.
_HARMLESS_DEFAULTS = {("MARKETMOOD_API__TOKENS", "[]")}
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
# Services that may be published beyond loopback: they authenticate every request (checked below).
_AUTHENTICATED = {"grafana"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _with_defaults(value: str, required: str = "x-test-secret") -> str:
    """Interpolate the way compose does when only the required (``:?``) variables are set (to ``required``)."""
    return _VAR.sub(lambda m: required if (m.group(2) or "").endswith("?") else (m.group(3) or ""), str(value))


def test_stack_has_every_service(compose: dict[str, Any]) -> None:
    assert {"kafka", "postgres", "grafana", "prometheus", "migrate", "worker", "api", "scheduler", "alerts"} <= set(
        _services(compose)
    )
    assert _services(compose)["kafka"]["image"].startswith("apache/kafka:")
    kafka_env = _services(compose)["kafka"]["environment"]
    assert "controller" in kafka_env["KAFKA_PROCESS_ROLES"]  # KRaft: no ZooKeeper service
    assert not any("zookeeper" in name for name in _services(compose))


def test_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, service in _services(compose).items():
        image = service.get("image", "")
        if "build" in service:
            continue
        assert re.search(r":[\w.\-]+$", image) and not image.endswith(":latest"), f"{name}: pin {image!r}"


def test_build_contexts_and_dockerfiles_exist(compose: dict[str, Any]) -> None:
    built = [s for s in _services(compose).values() if "build" in s]
    assert len(built) >= 4
    for service in built:
        context = (DOCKER / service["build"]["context"]).resolve()
        dockerfile = context / service["build"]["dockerfile"]
        assert context == REPO_ROOT and dockerfile.is_file(), dockerfile
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY ") and "--from" not in line:
                *sources, _dest = shlex.split(line)[1:]
                for source in sources:
                    assert list(context.glob(source)), f"{dockerfile.name}: COPY source {source} missing"


def test_dockerfiles_pin_torch_and_run_the_cli() -> None:
    cpu, cuda = (DOCKER / "Dockerfile").read_text(), (DOCKER / "Dockerfile.cuda").read_text()
    assert 'torch==2.13.0"' in cpu and "download.pytorch.org/whl/cpu" in cpu
    assert 'torch==2.13.0"' in cuda and "nvidia/cuda" in cuda
    assert cpu.index("torch==2.13.0") < cpu.index("pip install .")  # torch first, so pip keeps the CPU build
    for text in (cpu, cuda):
        assert 'ENTRYPOINT ["marketmood"]' in text


def _resolve(args: list[str]) -> click.Command:
    """Follow args through the click groups; fail on an unknown subcommand or option."""
    command: click.Command = cli
    rest = list(args)
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        sub = command.get_command(click.Context(command), rest[0])
        assert sub is not None, f"`marketmood {' '.join(args)}`: no subcommand {rest[0]!r}"
        command, rest = sub, rest[1:]
    options = {opt for param in command.params for opt in getattr(param, "opts", [])}
    for arg in rest:
        if arg.startswith("--"):
            assert arg.split("=")[0] in options, f"`marketmood {' '.join(args)}`: unknown option {arg}"
    return command


def test_service_commands_are_real_cli_commands(compose: dict[str, Any]) -> None:
    commands = {name: s["command"] for name, s in _services(compose).items() if "build" in s}
    assert commands["migrate"] == ["db", "upgrade"]
    for name, args in commands.items():
        assert isinstance(args, list), f"{name}: use the exec (list) form"
        assert not isinstance(_resolve(args), click.Group), f"{name}: {args} names a group, not a command"


def test_environment_is_valid_marketmood_settings(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    for name, service in _services(compose).items():
        env = {k: _with_defaults(v) for k, v in (service.get("environment") or {}).items()}
        ours = {k: v for k, v in env.items() if k.startswith("MARKETMOOD_")}
        if "build" not in service:
            continue
        assert ours["MARKETMOOD_KAFKA_BOOTSTRAP"] == "kafka:9092", name
        assert "@postgres:5432/" in ours["MARKETMOOD_DATABASE_URL"], name
        for key in list(os.environ):
            if key.startswith("MARKETMOOD_"):
                monkeypatch.delenv(key)
        for key, value in ours.items():
            if key not in {"MARKETMOOD_VERSION"}:
                monkeypatch.setenv(key, value)
        settings = load_settings()  # raises ConfigError on an unknown or invalid variable
        assert settings.topics.partitions >= 1
        for key in ours:
            _assert_setting_exists(key)


def _assert_setting_exists(env_name: str) -> None:
    path = env_name.removeprefix("MARKETMOOD_").lower().split("__")
    model: Any = Settings
    for part in path:
        assert part in model.model_fields, f"{env_name}: no setting {part!r}"
        model = model.model_fields[part].annotation
    return None


def test_variables_and_host_paths_are_documented_or_exist(compose: dict[str, Any]) -> None:
    docs = DOCS.read_text()
    variables = {m[0] for value in _strings(compose) for m in _VAR.findall(value)}
    assert {"KAFKA_BIND_ADDRESS", "API_BIND_ADDRESS", "GRAFANA_BIND_ADDRESS"} <= variables
    assert "POSTGRES_PASSWORD" in variables
    for variable in sorted(variables):
        assert f"`{variable}`" in docs, f"${{{variable}}} is not documented in docs/operations.md"
    for name, service in _services(compose).items():
        for volume in service.get("volumes", []):
            source = re.match(r"(\$\{[^}]*\}|[^:]+)", volume).group(1)  # type: ignore[union-attr]
            if source.startswith("${"):
                assert _VAR.match(source).group(1) in docs  # type: ignore[union-attr]
            elif source.startswith("."):
                assert (DOCKER / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in compose.get("volumes", {}), f"{name}: named volume {source} not declared"


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in _strings(key) + _strings(value)]
    if isinstance(node, list):
        return [s for item in node for s in _strings(item)]
    return [node] if isinstance(node, str) else []


def test_worker_can_scale(compose: dict[str, Any]) -> None:
    worker = _services(compose)["worker"]
    assert "container_name" not in worker and "ports" not in worker  # both break --scale worker=N
    assert "MARKETMOOD_TOPICS__PARTITIONS" in worker["environment"]
    assert "--scale worker=" in DOCS.read_text()


def test_grafana_mounts_the_rendered_provisioning(compose: dict[str, Any]) -> None:
    assert render.stale() == []
    grafana = _services(compose)["grafana"]
    mounts = {v.split(":")[1]: (DOCKER / v.split(":")[0]).resolve() for v in grafana["volumes"] if v.startswith(".")}
    assert mounts[DASHBOARDS_MOUNT] == render.GRAFANA_DIR / "dashboards"
    assert mounts["/etc/grafana/provisioning/datasources"] == render.GRAFANA_DIR / "provisioning" / "datasources"
    assert mounts["/etc/grafana/provisioning/dashboards"] == render.GRAFANA_DIR / "provisioning" / "dashboards"
    rendered = {p.relative_to(render.GRAFANA_DIR).as_posix() for p in render.GRAFANA_DIR.rglob("*") if p.is_file()}
    assert rendered == set(render.render_files())
    assert PASSWORD_ENV in grafana["environment"]  # the datasource file expands it
    assert grafana["image"].startswith("grafana/grafana-oss:11.6")  # the SDK flavour the dashboards target


def test_prometheus_scrapes_every_worker_replica(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    dns = jobs["marketmood-worker"]["dns_sd_configs"][0]
    assert "worker" in dns["names"] and dns["port"] == Settings().worker.web_port
    assert jobs["marketmood-api"]["static_configs"][0]["targets"] == ["api:8000"]
    assert jobs["marketmood-alerts"]["static_configs"][0]["targets"] == [f"alerts:{Settings().alerts.metrics_port}"]
    assert "6066" in [str(p) for p in _services(compose)["worker"]["expose"]]


def test_docs_exist_for_operators() -> None:
    docs = DOCS.read_text()
    for topic in ("docker compose", "partitions", "grafana-client", "MARKETMOOD_GRAFANA__READER_PASSWORD"):
        assert topic in docs
    assert Path(REPO_ROOT / "docker" / "grafana").is_dir()


def _variables(compose: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Every ${...} in the file as (name, operator, default-or-message)."""
    return [m for value in _strings(compose) for m in _VAR.findall(value)]


def test_secrets_have_no_defaults(compose: dict[str, Any]) -> None:
    """A secret comes from docker/.env or compose stops: ${VAR:?message}, never ${VAR:-default} or a literal."""
    for name, operator, rest in _variables(compose):
        if not _SECRET.search(name) or (name, rest) in _HARMLESS_DEFAULTS:
            continue
        assert operator == ":?", f"${{{name}}} must be ${{{name}:?message}}, not {operator or 'unset-able'} {rest!r}"
        assert "docker/.env" in rest, f"${{{name}:?...}}: the message should say where to set it"
    for service_name, service in _services(compose).items():
        for key, value in (service.get("environment") or {}).items():
            whole = _VAR.fullmatch(str(value))
            if _SECRET.search(key) and not (whole and (whole.group(1), whole.group(3)) in _HARMLESS_DEFAULTS):
                assert re.fullmatch(r"\$\{[A-Za-z0-9_]+:\?[^}]+\}", str(value)), f"{service_name}.{key}: literal secret"
        url = (service.get("environment") or {}).get("MARKETMOOD_DATABASE_URL", "")
        if url:
            password = re.match(r"[^:]+://[^:]+:(.*)@", url).group(1)  # type: ignore[union-attr]
            assert password.startswith("${POSTGRES_PASSWORD:?"), f"{service_name}: database password {password!r}"


def _published(port: Any) -> tuple[str, str]:
    """(host ip, host port) of a published port after default interpolation; no ip means every interface."""
    if isinstance(port, dict):
        return str(port.get("host_ip") or "0.0.0.0"), str(port.get("published", ""))
    parts = _with_defaults(str(port)).split("/")[0].split(":")
    if len(parts) == 3:
        return parts[0] or "0.0.0.0", parts[1]
    return "0.0.0.0", parts[0] if len(parts) == 2 else ""


def test_published_ports_bind_to_loopback_unless_configured(compose: dict[str, Any]) -> None:
    published = 0
    for name, service in _services(compose).items():
        for port in service.get("ports", []):
            published += 1
            host_ip, host_port = _published(port)
            if host_ip in _LOOPBACK:
                continue
            assert name in _AUTHENTICATED, f"{name}: port {host_port} published on {host_ip} without authentication"
            env = service.get("environment") or {}
            assert str(env.get("GF_AUTH_ANONYMOUS_ENABLED", "false")).lower() == "false"
            assert str(env.get("GF_SECURITY_ADMIN_PASSWORD", "")).startswith("${GF_SECURITY_ADMIN_PASSWORD:?")
    assert published >= 5


@pytest.mark.parametrize(
    ("port", "expected"),
    [("8000:8000", ("0.0.0.0", "8000")), ("127.0.0.1:5432:5432", ("127.0.0.1", "5432")),
     ("${API_BIND_ADDRESS:-127.0.0.1}:8000:8000", ("127.0.0.1", "8000")), ("9000", ("0.0.0.0", "")),
     ({"target": 80, "published": 8080}, ("0.0.0.0", "8080"))],
)
def test_port_parser_sees_what_compose_publishes(port: Any, expected: tuple[str, str]) -> None:
    assert _published(port) == expected


def test_env_example_lists_every_variable_with_empty_secrets(compose: dict[str, Any]) -> None:
    lines = [line for line in ENV_EXAMPLE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    example = dict(line.split("=", 1) for line in lines)
    for name, operator, _rest in _variables(compose):
        assert name in example, f"{name} is missing from docker/.env.example"
        if operator == ":?":
            assert example[name] == "", f"{name}: .env.example must not ship a usable secret"
    assert set(example) <= {name for name, _, _ in _variables(compose)} | {"MARKETMOOD_API__TOKENS"}
    assert "docker/.env.example" in DOCS.read_text()


def test_the_api_is_told_which_proxies_to_trust(compose: dict[str, Any]) -> None:
    """uvicorn reads FORWARDED_ALLOW_IPS from the container's environment; the docs told operators to set it in
    docker/.env, which only substitutes into this file: without the pass-through every client behind a proxy
    shared one rate-limit bucket."""
    api = _services(compose)["api"]
    assert "FORWARDED_ALLOW_IPS" in (api.get("environment") or {})
    assert "FORWARDED_ALLOW_IPS" in (DOCKER / ".env.example").read_text()


def test_prometheus_scrapes_every_service_that_runs_a_worker(compose: dict[str, Any]) -> None:
    """`worker-gpu` (profile gpu) joins the workers' consumer group and exposes the same metrics port; it was not
    scraped, so its lag, throughput and dead letters were missing from "Pipeline health". One job, so the
    dashboards' sums cover both. Prometheus resolves each dns_sd name on its own (discovery/dns/dns.go: one
    lookup per name; an NXDOMAIN is an empty group, an error is logged and keeps that name's last targets), so
    the name of a service that is not running does not stop the others from being scraped."""
    config = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    port = Settings().worker.web_port
    workers = {name for name, service in _services(compose).items() if service.get("command") == ["worker"]}
    assert {"worker", "worker-gpu"} <= workers
    worker_sd = jobs["marketmood-worker"]["dns_sd_configs"]
    names = {name for sd in worker_sd for name in sd["names"]}
    assert workers <= names, f"not scraped: {sorted(workers - names)}"
    for sd in worker_sd:
        assert sd["type"] == "A" and sd["port"] == port
    for name in workers:
        assert str(port) in [str(p) for p in _services(compose)[name].get("expose", [])], name
    others = [j for n, j in jobs.items() if n != "marketmood-worker"]
    assert not any(name in str(job) for job in others for name in workers), "a worker in two jobs is counted twice"


def _env_file_paths(service: dict[str, Any]) -> list[tuple[str, bool]]:
    """(path, required) of a service's env_file entries (string, list of strings, or list of mappings)."""
    entries = service.get("env_file") or []
    entries = [entries] if isinstance(entries, str) else entries
    return [(e, True) if isinstance(e, str) else (e["path"], bool(e.get("required", True))) for e in entries]


def _example_env(path: Path) -> dict[str, str]:
    """The variables an env example names, commented (`#VAR=`) or not, each given a usable dummy value."""
    names = re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", path.read_text(), flags=re.MULTILINE)
    return {name: f"https://x.example/{name.lower()}-0123456789abcdef" for name in names}


def test_the_alerts_service_can_page_on_call(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The alerts service had no rules file, no MARKETMOOD_ALERTS__RULES_PATH and no env_file: it ran the bundled
    rules (`notifiers: {}`) and the ${PAGERDUTY_ROUTING_KEY} / ${SLACK_WEBHOOK_URL} that docs/alerts.md tells
    operators to use never reached the container (docker/.env only interpolates the compose file)."""
    from alerts.rules import load_rules

    alerts = _services(compose)["alerts"]
    env = alerts.get("environment") or {}
    rules_path = env.get("MARKETMOOD_ALERTS__RULES_PATH")
    assert rules_path, "alerts: MARKETMOOD_ALERTS__RULES_PATH is not set"
    assert env.get("MARKETMOOD_DATABASE_URL") == _services(compose)["worker"]["environment"]["MARKETMOOD_DATABASE_URL"]

    # the rules file: a read-only bind mount at that path, from a documented variable whose default exists
    mounts = [v for v in alerts.get("volumes", []) if isinstance(v, str) and v.rsplit(":", 2)[1:2] == [rules_path]]
    assert len(mounts) == 1, f"alerts: nothing mounted at {rules_path}: {alerts.get('volumes')}"
    source, target, mode = mounts[0].rsplit(":", 2)
    assert target == rules_path and mode == "ro"
    variable = _VAR.fullmatch(source)
    assert variable and variable.group(2) == ":-", f"alerts: rules source {source!r} should be ${{VAR:-default}}"
    docs = DOCS.read_text()
    assert f"`{variable.group(1)}`" in docs and "alert-rules.yaml" in docs
    default = (DOCKER / variable.group(3)).resolve()
    assert default.is_file(), default
    load_rules(default)  # the default starts (records alerts, pages no one)

    # the notifier secrets: an env_file of this service (optional: a stack without notifiers still starts),
    # with an example naming every ${VAR} without a default in the documented example rules
    env_files = _env_file_paths(alerts)
    assert env_files, "alerts: no env_file, so the notifier secrets cannot reach the container"
    for path, required in env_files:
        assert not required, f"alerts: env_file {path} should be optional (required: false)"
        assert (DOCKER / f"{path}.example").is_file(), f"docker/{path}.example (the documented template) is missing"
        assert f"docker/{Path(path).name}" in docs
    example_rules = REPO_ROOT / "alerts" / "rules.example.yaml"
    needed = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", example_rules.read_text()))
    assert {"PAGERDUTY_ROUTING_KEY", "SLACK_WEBHOOK_URL"} <= needed
    provided: dict[str, str] = {}
    for path, _required in env_files:
        provided |= _example_env(DOCKER / f"{path}.example")
    assert needed <= set(provided), f"not in the alerts env_file example: {sorted(needed - set(provided))}"
    for key, value in provided.items():
        monkeypatch.setenv(key, value)
    rules = load_rules(example_rules)  # what the container loads once docker/alerts.env is filled in
    assert "oncall-pagerduty" in rules.route("critical")

    # docker/.env must not be that env_file: it would hand Grafana's admin password and the API tokens to alerts
    assert all(Path(path).name != ".env" for path, _required in env_files)


def _dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """(negated, regex) per .dockerignore line, as Docker matches them (Go filepath.Match plus `**`)."""
    patterns = []
    for raw in (REPO_ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**", i):
                regex += ".*"
                i += 2
                if pattern.startswith("/", i):
                    regex = regex[:-2] + "(?:.*/)?"
                    i += 1
                continue
            char = pattern[i]
            if char == "*":
                regex += "[^/]*"
            elif char == "?":
                regex += "[^/]"
            elif char == "[":
                end = pattern.index("]", i)
                regex += pattern[i:end + 1]
                i = end
            else:
                regex += re.escape(char)
            i += 1
        patterns.append((negated, re.compile(regex + r"\Z")))
    return patterns


def _ignored(path: str) -> bool:
    """Whether Docker leaves ``path`` (relative to the build context) out: the last pattern that matches the path
    or one of its parent folders decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for negated, regex in _dockerignore_patterns():
        if any(regex.match(prefix) for prefix in prefixes):
            ignored = not negated
    return ignored


def test_the_build_context_leaves_out_the_venv_git_and_secrets() -> None:
    """The build context is the repository root: without a .dockerignore every build uploaded .venv (GBs), .git
    and docker/.env (production secrets) to the builder."""
    assert (REPO_ROOT / ".dockerignore").is_file(), "no .dockerignore at the build context (the repository root)"
    for path in (".venv", ".venv/lib/python3.11/site-packages/torch/__init__.py", ".git", ".git/config",
                 "docker/.env", "docker/alerts.env", "docker/alert-rules.yaml", ".env", "tests",
                 "benchmarks/results", ".pytest_cache", "marketmood/__pycache__/cli.cpython-311.pyc",
                 "marketmood.egg-info", "shared/data"):
        assert _ignored(path), f"{path} is sent to the Docker builder"


def test_the_build_context_keeps_everything_the_dockerfiles_copy() -> None:
    for dockerfile in (DOCKER / "Dockerfile", DOCKER / "Dockerfile.cuda"):
        copies = [shlex.split(line)[1:-1] for line in dockerfile.read_text().splitlines()
                  if line.startswith("COPY ") and "--from" not in line]
        assert copies, dockerfile
        for sources in copies:
            for source in sources:
                assert not _ignored(source), f"{dockerfile.name}: COPY {source} is excluded by .dockerignore"
                for path in (REPO_ROOT / source).rglob("*") if (REPO_ROOT / source).is_dir() else []:
                    rel = path.relative_to(REPO_ROOT).as_posix()
                    if path.is_file() and "__pycache__" not in rel and not rel.endswith(".pyc"):
                        assert not _ignored(rel), f"{dockerfile.name}: {rel} (under COPY {source}) is excluded"


@pytest.mark.parametrize(
    ("path", "ignored"),
    [("marketmood/cli.py", False), ("models/default_model", False), ("pyproject.toml", False),
     ("docker/Dockerfile", False), ("docker/.env", True), (".git/HEAD", True), ("a/b/__pycache__/x.pyc", True)],
)
def test_dockerignore_matcher(path: str, ignored: bool) -> None:
    assert _ignored(path) is ignored


def _instructions(dockerfile: Path) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in dockerfile.read_text().splitlines():
        if raw.lstrip().startswith("#"):
            continue
        current += raw.rstrip().removesuffix("\\") + " " if raw.rstrip().endswith("\\") else raw
        if not raw.rstrip().endswith("\\"):
            if current.strip():
                lines.append(" ".join(current.split()))
            current = ""
    return lines


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_dependencies_are_installed_before_the_sources_are_copied(name: str) -> None:
    """The comment said so, but `pip install .` ran after every source COPY: each code edit reinstalled every
    dependency. Now a layer that sees only pyproject.toml installs its dependencies."""
    import subprocess
    import sys
    import tomllib

    steps = _instructions(DOCKER / name)
    installs = [i for i, s in enumerate(steps) if s.startswith("RUN ") and "pip install -r" in s]
    assert len(installs) == 1, f"{name}: no separate dependency install"
    deps = installs[0]
    copies = {i: shlex.split(s)[1:-1] for i, s in enumerate(steps) if s.startswith("COPY ")}
    copied_before = [src for i, sources in copies.items() if i < deps for src in sources]
    assert copied_before == ["pyproject.toml"], f"{name}: copied before the dependencies: {copied_before}"
    packages = {"marketmood", "models", "streams", "training", "storage", "alerts"}
    assert packages <= {src for i, sources in copies.items() if i > deps for src in sources}
    project = [i for i, s in enumerate(steps) if s.startswith("RUN pip install .")]
    assert project and project[0] > max(copies), f"{name}: the project must be installed after its sources"
    # the list it installs is the project's, exactly: run its extraction on this repository's pyproject.toml
    code = re.search(r'python -c "([^"]+)"', steps[deps]).group(1)  # type: ignore[union-attr]
    listed = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    expected = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert listed.stdout.splitlines() == expected
