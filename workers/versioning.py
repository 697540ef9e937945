"""Worker Versioning: which Worker Deployment Version this process serves, read from the environment.

With ``INVSAGA_WORKER_DEPLOYMENT_NAME`` and ``INVSAGA_WORKER_BUILD_ID`` both set, the worker joins that
deployment as that build, and the server routes tasks only to the deployment's current (or ramping)
version; an operator promotes a build with ``temporal worker deployment set-current-version``. With
neither set, the worker is unversioned, as in development and in the tests.

Workflows default to AUTO_UPGRADE: a running checkout moves to the new current build at its next
workflow task. That is safe because every workflow change is replay-tested against committed
histories and guarded by ``workflow.patched``, and it is what lets workers be replaced in place by a
rolling update. A PINNED checkout would instead need its old build's workers kept running until it
finished; were they replaced first, it would stall holding stock, and a hold that outlives its TTL
is lost after the buyer has paid. docs/operations.md walks through a rollout.
"""

from __future__ import annotations

from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.worker import WorkerDeploymentConfig

from invsaga.domain.errors import ConfigurationError
from invsaga.settings import Settings

DEFAULT_VERSIONING_BEHAVIOR = VersioningBehavior.AUTO_UPGRADE


def deployment_version(settings: Settings) -> WorkerDeploymentVersion | None:
    """The configured version, None when versioning is off, or a ConfigurationError when half set."""
    name = settings.worker_deployment_name.strip()
    build_id = settings.worker_build_id.strip()
    if not name and not build_id:
        return None
    if not name or not build_id:
        missing = "INVSAGA_WORKER_DEPLOYMENT_NAME" if not name else "INVSAGA_WORKER_BUILD_ID"
        raise ConfigurationError(
            f"{missing} is not set: Worker Versioning needs both a deployment name and a build id "
            "(set both, or neither to run unversioned)"
        )
    if "." in name:
        # The server spells a version "<deployment>.<build id>", so the name cannot contain a dot.
        raise ConfigurationError(f"INVSAGA_WORKER_DEPLOYMENT_NAME must not contain '.': {name!r}")
    return WorkerDeploymentVersion(deployment_name=name, build_id=build_id)


def deployment_config(settings: Settings) -> WorkerDeploymentConfig | None:
    version = deployment_version(settings)
    if version is None:
        return None
    return WorkerDeploymentConfig(
        version=version,
        use_worker_versioning=True,
        default_versioning_behavior=DEFAULT_VERSIONING_BEHAVIOR,
    )
