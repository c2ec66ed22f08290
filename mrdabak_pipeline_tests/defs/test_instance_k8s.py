"""The Kubernetes instance (deploy/dagster.k8s.yaml) loads for real, K8sRunLauncher included.

`DagsterInstance.get()` reads the file from $DAGSTER_HOME against a fresh PostgreSQL database, and
`instance.run_launcher` builds the `dagster_k8s.K8sRunLauncher` from the file's config through
Dagster's ConfigurableClass machinery (config schema validation, then ``__init__``). That
``__init__`` loads the in-cluster Kubernetes config: the test gives it a fake service account (a
token and CA file and the KUBERNETES_SERVICE_* variables a pod has); nothing talks to a cluster.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import yaml
from sqlalchemy.engine import make_url

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S_YAML = REPO_ROOT / "deploy" / "dagster.k8s.yaml"

pytestmark = pytest.mark.postgres


@pytest.fixture
def k8s_home(pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$DAGSTER_HOME for the K8s instance, PostgreSQL env vars, and a pod's service account."""
    import kubernetes.config.incluster_config as incluster

    url = make_url(pg_url)
    for key, value in {"HOST": url.host, "PORT": str(url.port), "USER": url.username,
                       "PASSWORD": url.password or "", "DB": url.database}.items():
        monkeypatch.setenv(f"DAGSTER_PG_{key}", value)
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("test-token")
    (account / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\nnot-used\n-----END CERTIFICATE-----\n")
    monkeypatch.setattr(incluster, "SERVICE_TOKEN_FILENAME", str(account / "token"))
    monkeypatch.setattr(incluster, "SERVICE_CERT_FILENAME", str(account / "ca.crt"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def test_the_k8s_instance_loads_with_k8s_run_launcher(k8s_home: Path) -> None:
    from dagster_k8s import K8sRunLauncher

    (k8s_home / "dagster.yaml").write_text(K8S_YAML.read_text())
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        launcher = instance.run_launcher
        assert isinstance(launcher, K8sRunLauncher)
        assert launcher.job_namespace == "mrdabak"
        assert launcher.instance_config_map == "mrdabak-dagster-instance"
        assert launcher.postgres_password_secret == "mrdabak-dagster-postgresql"
        assert launcher.env_secrets == ["mrdabak-secrets"]
        assert "MRDABAK_DATA_DIR=/data" in launcher.env_vars
        claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in launcher.volumes}
        assert claims["data"] == "mrdabak-data"
        assert {m["name"]: m["mountPath"] for m in launcher.volume_mounts}["data"] == "/data"
        assert launcher.fail_pod_on_run_failure is True
        # Run monitoring works with this launcher (it can health-check the run's Job).
        assert launcher.supports_check_run_worker_health

        # The queue, the `gpu` pool and run monitoring as in the local instance.
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        concurrency = instance.get_concurrency_config()
        assert {"key": "mrdabak/pool", "value": "gpu", "limit": 1} in concurrency.run_queue_config.tag_concurrency_limits
        assert concurrency.pool_config.default_pool_limit == 1
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 15


def test_a_misspelled_run_launcher_key_is_refused(k8s_home: Path) -> None:
    """The load above is a real schema check: the same file with one key misspelled fails."""
    config = yaml.safe_load(K8S_YAML.read_text())
    config["run_launcher"]["config"]["job_namespac"] = config["run_launcher"]["config"].pop("job_namespace")
    (k8s_home / "dagster.yaml").write_text(yaml.safe_dump(config))
    with dg.DagsterInstance.get() as instance, pytest.raises(dg.DagsterInvalidConfigError, match="job_namespac"):
        instance.run_launcher  # noqa: B018 - the property builds (and validates) the launcher
