"""Where steps run past one machine: the placement tags derived from the pool (defs/placement.py), the Celery
and Kubernetes code locations (the same graph), and deploy/k8s/ checked against dagster-k8s's own schemas and
Kubernetes models, without a cluster."""

from __future__ import annotations

import json

import dagster as dg
import pytest
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config
from dagster_k8s import K8sRunLauncher, k8s_job_executor
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import DagsterK8sJobConfig, UserDefinedDagsterK8sConfig, construct_dagster_k8s_job
from dagster_k8s.job import get_user_defined_k8s_config as k8s_config_of_tags

from deer_reid_assets.defs.instance import REPO_ROOT
from deer_reid_assets.defs.placement import GPU_POOL, queue_of, step_tags

K8S = REPO_ROOT / "deploy" / "k8s"
K8S_ENV = {"DEER_REID_IMAGE": "registry.example/deer-reid:0.1.0", "DEER_REID_NAMESPACE": "deer-reid",
           "DAGSTER_PG_URL": "postgresql+psycopg2://deer:secret@db:5432/dagster"}


def _ops(defs: dg.Definitions) -> dict:
    """Every op of the code location (assets and checks) by name."""
    job = defs.get_repository_def().get_implicit_global_asset_job_def()
    return {node.name: node.definition for node in job.graph.nodes}


def test_gpu_steps_and_only_they_carry_the_tags_derived_from_their_pool():
    from deer_reid_assets.definitions import defs

    ops = _ops(defs)
    gpu = {name for name, op in ops.items() if op.pool == GPU_POOL}
    assert {"detections", "baseline_embeddings", "finetuned_reid_model", "antler_detector"} <= gpu
    for name, op in ops.items():
        placed = {k: v for k, v in op.tags.items() if k in step_tags(GPU_POOL)}
        assert placed == step_tags(op.pool), f"{name} (pool {op.pool}): use **gpu_step() from defs/placement.py"
    assert queue_of(GPU_POOL) == "gpu" and queue_of(None) == "dagster"


@pytest.mark.parametrize("module", ["celery_definitions", "k8s_definitions"])
def test_the_distributed_code_locations_hold_the_same_graph_on_another_executor(module):
    import importlib

    from deer_reid_assets.definitions import defs

    other = importlib.import_module(f"deer_reid_assets.{module}").defs
    assert _ops(other).keys() == _ops(defs).keys()
    repo, base = other.get_repository_def(), defs.get_repository_def()
    assert repo.assets_defs_by_key.keys() == base.assets_defs_by_key.keys()
    assert {j.name for j in repo.get_all_jobs()} == {j.name for j in base.get_all_jobs()}
    assert {s.name for s in repo.sensor_defs} == {s.name for s in base.sensor_defs}
    expected = "celery_redis" if module == "celery_definitions" else "k8s"
    assert {j.executor_def.name for j in repo.get_all_jobs()} == {expected}


def test_the_k8s_instance_file_validates_against_the_instance_and_run_launcher_schemas(monkeypatch):
    config, _ = dagster_instance_config(str(K8S))  # raises on any error against Dagster's instance schema
    launcher = config["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    for name, value in K8S_ENV.items():
        monkeypatch.setenv(name, value)
    result = process_config(K8sRunLauncher.config_type(), launcher["config"])
    assert result.success, result.errors
    assert result.value["job_image"] == K8S_ENV["DEER_REID_IMAGE"]
    assert config["concurrency"]["pools"]["default_limit"] == 1  # one GPU step at a time, as on one machine


def _step_job(launcher: dict, executor: dict, tags: dict, step: str):
    """The Kubernetes Job the k8s_job_executor submits for a step (as K8sStepHandler builds it: the run
    launcher's settings, then the executor's step_k8s_config, then the step's tags), without a cluster."""
    context = K8sContainerContext(
        image_pull_policy=launcher.get("image_pull_policy"), service_account_name=launcher.get("service_account_name"),
        env_secrets=launcher.get("env_secrets"), env_vars=launcher.get("env_vars"),
        volume_mounts=launcher.get("volume_mounts"), volumes=launcher.get("volumes"),
        namespace=launcher.get("job_namespace"),
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(launcher.get("run_k8s_config", {})))
    context = context.merge(K8sContainerContext(
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(executor.get("step_k8s_config", {}))))
    context = context.merge(K8sContainerContext(run_k8s_config=k8s_config_of_tags(tags)))
    job_config = DagsterK8sJobConfig(job_image=launcher["job_image"], dagster_home=launcher["dagster_home"],
                                     instance_config_map=launcher["instance_config_map"])
    return construct_dagster_k8s_job(job_config, ["dagster", "api", "execute_step"], f"dagster-step-{step[:20]}",
                                     user_defined_k8s_config=context.run_k8s_config, component="step_worker")


def test_the_k8s_run_config_validates_and_only_gpu_steps_request_a_gpu(monkeypatch):
    from deer_reid_assets.k8s_definitions import defs

    run_config = yaml.safe_load((K8S / "run_config.yaml").read_text())
    job = defs.resolve_job_def("reid_pipeline")
    dg.validate_run_config(job, run_config)  # raises on any error against the job's own schema
    executor = process_config(k8s_job_executor.config_schema.config_type, run_config["execution"]["config"])
    assert executor.success, executor.errors
    for name, value in K8S_ENV.items():
        monkeypatch.setenv(name, value)
    launcher_yaml = yaml.safe_load((K8S / "dagster.yaml").read_text())["run_launcher"]["config"]
    launcher = process_config(K8sRunLauncher.config_type(), launcher_yaml).value

    for node in job.graph.nodes:
        op = node.definition
        pod = _step_job(launcher, executor.value, op.tags, node.name).spec.template.spec
        (container,) = pod.containers
        resources = container.resources
        gpus = {k: v for part in (resources.requests or {}, resources.limits or {}) for k, v in part.items()
                if k == "nvidia.com/gpu"}
        assert gpus == ({"nvidia.com/gpu": "1"} if op.pool == GPU_POOL else {}), node.name
        assert resources.requests["cpu"] == "1" and resources.limits["memory"] == "6Gi", node.name  # the run config's
        tolerations = [t.key for t in pod.tolerations or []]
        assert tolerations == (["nvidia.com/gpu"] if op.pool == GPU_POOL else []), node.name
        assert container.image == K8S_ENV["DEER_REID_IMAGE"] and pod.volumes[0].persistent_volume_claim.claim_name
        assert json.loads(op.tags.get("dagster-k8s/config", "{}")) == (
            json.loads(step_tags(GPU_POOL)["dagster-k8s/config"]) if op.pool == GPU_POOL else {})


def test_serve_refuses_a_missing_workspace_file_in_one_line(tmp_path):
    from click.testing import CliRunner

    from deer_reid_assets.cli import main

    result = CliRunner().invoke(main, ["serve", "--review-port", "0", "--workspace", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert result.output.strip() == f"deer-reid: --workspace {tmp_path / 'nope.yaml'}: no such file"
