"""The cluster definitions in infra/ are real configs: the launcher YAML validates against Ray's own schema,
and the RayJob runs the same CLI with a GPU worker group."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import yaml

from latentarc.jobs.cli import build_parser

INFRA = Path(__file__).resolve().parent.parent / "infra"


def test_cluster_launcher_yaml_matches_ray_schema():
    import jsonschema
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    cfg = yaml.safe_load((INFRA / "ray-cluster.yaml").read_text())
    jsonschema.validate(cfg, schema)
    gpu = cfg["available_node_types"]["gpu_worker"]["resources"]
    assert gpu["GPU"] >= 1


def test_rayjob_runs_the_cli_on_gpu_workers():
    job = yaml.safe_load((INFRA / "rayjob.yaml").read_text())
    assert job["kind"] == "RayJob" and job["apiVersion"] == "ray.io/v1"
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[0] == "latentarc"
    args = build_parser().parse_args(argv[1:])  # the entrypoint is a valid command line of this CLI
    assert args.verb == "compress" and args.ray_address == "auto"
    groups = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    limits = groups[0]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert int(limits["nvidia.com/gpu"]) == 1
