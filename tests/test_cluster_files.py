"""The files in cluster/, parsed or run: the `ray up` configs against Ray's own schema and checks, the
KubeRay and MLflow manifests as Kubernetes objects, the RayJob's entrypoint parsed by the CLI, the
Dockerfile's instructions, and the shell scripts run with the tools they call (uv, srun, ray,
tvae-sweep) replaced by stubs that record how they were called."""
from __future__ import annotations

import copy
import json
import os
import re
import shlex
import socket
import subprocess
from pathlib import Path

import jsonschema
import pytest
import ray
import ray.autoscaler
import tomllib
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from tvae_sweep.cli import main
from tvae_sweep.sweep.cluster import node_local
from tvae_sweep.sweep.validation import load_spec

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"


def yaml_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def manifests() -> list[tuple[Path, dict]]:
    files = sorted((CLUSTER / "kuberay").glob("*.yaml")) + sorted((CLUSTER / "mlflow").glob("*.yaml"))
    assert files
    return [(f, doc) for f in files for doc in yaml_docs(f)]


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_ray_up_configs_pass_rays_own_validation(name):
    raw = yaml.safe_load((CLUSTER / name).read_text())
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(raw, schema)
    config = prepare_config(copy.deepcopy(raw))  # what `ray up` does before it calls the cloud
    validate_config(config)

    types = config["available_node_types"]
    workers = {k: v for k, v in types.items() if k != config["head_node_type"]}
    gpu = [k for k, v in workers.items()
           if v["resources"].get("GPU") or v["node_config"].get("guestAccelerators")
           or re.match(r"(g\d|p\d)", v["node_config"].get("InstanceType", v["node_config"].get("machineType", "")))]
    assert gpu, "no GPU worker type"
    assert all(workers[k]["max_workers"] > workers[k]["min_workers"] for k in gpu)  # the autoscaler grows them
    assert config["max_workers"] >= max(workers[k]["max_workers"] for k in gpu)
    # setup installs this project from the copied checkout with constraints.txt
    assert config["file_mounts"]["~/tvae-sweep"] == "."
    assert any("cluster/install.sh" in c for c in config["setup_commands"])
    # token authentication on every node
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert any("RAY_AUTH_MODE=token ray start" in c for c in config[key])


@pytest.mark.parametrize("path", sorted(p.relative_to(CLUSTER) for p in CLUSTER.rglob("*")
                                        if p.suffix in (".sh", ".sbatch")), ids=str)
def test_shell_scripts_parse(path):
    proc = subprocess.run(["bash", "-n", str(CLUSTER / path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def check_ray_job(spec: dict, where: str, names: set) -> None:
    assert spec["entrypoint"], where
    selector = spec.get("clusterSelector", {}).get("ray.io/cluster")
    assert spec.get("rayClusterSpec") or ("RayCluster", selector) in names, where
    if spec.get("rayClusterSpec"):
        check_ray_cluster_spec(spec["rayClusterSpec"], where)


def check_workload(spec: dict, where: str, names: set) -> None:
    """A Deployment's or StatefulSet's: its selector matches its pods, each container has an image."""
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items(), where
    assert all(c["name"] and c["image"] for c in spec["template"]["spec"]["containers"]), where
    if "serviceName" in spec:  # a StatefulSet's
        assert ("Service", spec["serviceName"]) in names and spec["volumeClaimTemplates"], where


def check_service(spec: dict, where: str, docs: list) -> None:
    assert all(p["port"] for p in spec["ports"]), where
    selected = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")
                and spec["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
    assert selected, f"{where} selects no pods"


def test_kubernetes_manifests_have_their_required_fields():
    docs = [doc for _, doc in manifests()]
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    checks = {"RayCluster": lambda spec, where: check_ray_cluster_spec(spec, where),
              "RayJob": lambda spec, where: check_ray_job(spec, where, names),
              "Deployment": lambda spec, where: check_workload(spec, where, names),
              "StatefulSet": lambda spec, where: check_workload(spec, where, names),
              "Service": lambda spec, where: check_service(spec, where, docs),
              "PersistentVolumeClaim": lambda spec, where: check_claim(spec, where)}
    for path, doc in manifests():
        where = f"{path.name}: {doc.get('kind')}"
        assert doc.get("apiVersion") and doc.get("kind") and doc.get("metadata", {}).get("name"), where
        assert doc["kind"] in checks, f"{where}: a kind this test does not know (secrets are never written here)"
        checks[doc["kind"]](doc.get("spec") or {}, where)
    assert {"RayCluster", "RayJob", "Deployment", "StatefulSet", "Service"} <= {kind for kind, _ in names}


def check_claim(spec: dict, where: str) -> None:
    assert spec["accessModes"] and spec["resources"]["requests"]["storage"], where


def check_ray_cluster_spec(spec: dict, where: str) -> None:
    assert spec["rayVersion"] == ray.__version__, where
    assert spec["authOptions"]["mode"] == "token", where
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict) and head["template"]["spec"]["containers"][0]["image"], where
    groups = spec["workerGroupSpecs"]
    for g in groups:
        assert g["groupName"] and isinstance(g["rayStartParams"], dict), where
        assert 0 <= g["minReplicas"] <= g["maxReplicas"], where
        assert g["template"]["spec"]["containers"][0]["image"], where
    gpu = [g for g in groups if any(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
                                    for c in g["template"]["spec"]["containers"])]
    assert gpu and spec.get("enableInTreeAutoscaling"), f"{where}: no autoscaled GPU worker group"


def test_secrets_in_manifests_come_by_reference():
    for path, doc in manifests():
        for container in _containers(doc):
            for var in container.get("env", []):
                if re.search(r"PASSWORD|SECRET|TOKEN|KEY_ID", var["name"]):
                    assert "secretKeyRef" in var.get("valueFrom", {}), f"{path.name}: {var['name']}"


def _containers(doc: dict) -> list[dict]:
    spec = doc.get("spec") or {}
    templates = [spec.get("template")] if "template" in spec else []
    cluster = spec.get("rayClusterSpec") or (spec if doc["kind"] == "RayCluster" else None)
    if cluster:
        templates += [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    return [c for t in templates for c in t["spec"]["containers"]]


def test_rayjob_entrypoint_is_a_real_tvae_sweep_command():
    [job] = [d for _, d in manifests() if d["kind"] == "RayJob"]
    argv = shlex.split(job["spec"]["entrypoint"])
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert argv[0] in scripts and scripts[argv[0]] == "tvae_sweep.cli:entry_point"
    assert argv[1] in main.commands
    command = main.commands[argv[1]]
    with command.make_context(argv[1], argv[2:], resilient_parsing=False) as ctx:  # click parses it
        params = ctx.params
    assert (ROOT / params["spec_path"]).is_file() and str(params["spec_path"]).startswith("search_spaces/")
    spec = load_spec(ROOT / params["spec_path"], list(params["overrides"]))  # the spec, overridden, is valid
    assert not node_local(spec), "a multi-node sweep needs an object store or a shared folder"
    assert spec.resources.gpus_per_trial > 0


def test_mlflow_server_has_postgres_artifacts_and_allowed_hosts():
    docs = yaml_docs(CLUSTER / "mlflow" / "mlflow.yaml")
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    args = " ".join(container["args"])
    assert "--backend-store-uri=postgresql://" in args and "@mlflow-postgres:5432/" in args
    assert "--artifacts-destination=s3://" in args and "--serve-artifacts" in args
    hosts = re.search(r"--allowed-hosts=(\S+)", args).group(1).split(",")
    assert "mlflow:5000" in hosts and "*" not in hosts
    assert {d["kind"] for d in docs} >= {"StatefulSet", "Service", "Deployment"}


def test_readme_explains_every_file_ports_auth_and_storage():
    readme = (CLUSTER / "README.md").read_text()
    for path in CLUSTER.rglob("*"):
        if path.is_file() and path.name != "README.md":
            assert str(path.relative_to(CLUSTER)) in readme, f"README does not explain {path.relative_to(CLUSTER)}"
    for needle in ("6379", "8265", "5000", "5432", "RAY_AUTH_MODE=token", "ray get-auth-token", "--allowed-hosts",
                   "shared: true", "s3://"):
        assert needle in readme, needle


# ---------------------------------------------------------------- the Dockerfile, parsed


def dockerfile_stages(path: Path) -> dict[str, list[tuple[str, str]]]:
    """The Dockerfile's build stages by name, each a list of (INSTRUCTION, arguments) with continuation
    lines joined, comments dropped and the global ARGs substituted in FROM lines."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    instructions = [line.split(None, 1) for line in lines]
    args, stages, current = {}, {}, None
    for word, rest in instructions:
        word = word.upper()
        if word == "ARG" and current is None:
            name, _, default = rest.partition("=")
            args[name] = default
        elif word == "FROM":
            image, _, name = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], rest).partition(" AS ")
            current = stages.setdefault(name.strip(), [("FROM", image.strip())])
        else:
            current.append((word, rest))
    return stages


def check_installs_are_pinned(steps: list[tuple[str, str]], stage: str) -> None:
    """Every pip install of the stage runs with --constraint, after constraints.txt is copied in."""
    installs = [i for i, (word, rest) in enumerate(steps) if word == "RUN" and "pip install" in rest]
    copied = next(i for i, (word, rest) in enumerate(steps) if word == "COPY" and "constraints.txt" in rest)
    assert installs and copied < installs[0], stage
    for i in installs:
        assert "--constraint" in shlex.split(steps[i][1].split("&&")[0]), steps[i]


def test_dockerfile_builds_a_cuda_sweep_image_and_an_mlflow_image_with_the_pinned_versions():
    stages = dockerfile_stages(CLUSTER / "Dockerfile")
    assert {"sweep", "mlflow"} <= stages.keys()
    for name in ("sweep", "mlflow"):
        check_installs_are_pinned(stages[name], name)
    image = stages["sweep"][0][1]
    assert image.startswith("nvidia/cuda:") and "cudnn" in image
    checks = [rest for word, rest in stages["sweep"] if word == "RUN" and "torch.version.cuda" in rest]
    assert checks, "the sweep image's build does not fail on a torch without CUDA"
    [mlflow_install] = [shlex.split(rest) for word, rest in stages["mlflow"] if word == "RUN"]
    pinned = [a for a in mlflow_install if a.startswith(("psycopg2-binary", "boto3"))]
    assert len(pinned) == 2 and all(re.fullmatch(r"[\w-]+==[\d.]+", a) for a in pinned)


# ---------------------------------------------------------------- the scripts, run with stubs

STUB = """#!/usr/bin/env bash
printf '%s\\n' "$(basename "$0") $*" >> "$STUB_LOG"
printf 'env RAY_AUTH_MODE=%s\\n' "${RAY_AUTH_MODE:-}" >> "$STUB_LOG"
"""


def stubs(folder: Path, **extra: str) -> dict:
    """Commands in `folder` that record their arguments in folder/calls.log (plus `extra` lines of
    shell each), and the environment that finds them first."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in extra.items():
        path = folder / name.replace("_", "-")
        path.write_text(STUB + body + "\n")
        path.chmod(0o755)
    return {**os.environ, "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}", "STUB_LOG": str(folder / "calls.log")}


def calls(folder: Path) -> list[list[str]]:
    return [shlex.split(line) for line in (folder / "calls.log").read_text().splitlines()]


def test_install_script_installs_the_checkout_with_the_pinned_versions(tmp_path):
    venv = tmp_path / "venv"
    # uv's venv makes a python that answers the script's last check
    env = stubs(tmp_path / "bin", uv='if [ "$1" = venv ]; then mkdir -p "${@: -1}/bin"; '
                                     'printf "#!/bin/sh\\necho checked\\n" > "${@: -1}/bin/python"; '
                                     'chmod +x "${@: -1}/bin/python"; fi',
                curl="exit 1")  # never reached: uv is there
    proc = subprocess.run(["bash", str(CLUSTER / "install.sh"), str(ROOT), str(venv), "boto3==1.44.5"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "checked"
    made, installed = [c for c in calls(tmp_path / "bin") if c[0] == "uv"]
    assert made[1:] == ["venv", "--allow-existing", "--python", "3.11", str(venv)]
    assert installed[1:3] == ["pip", "install"]
    argv = installed[3:]
    assert argv[argv.index("--python") + 1] == f"{venv}/bin/python"
    assert argv[argv.index("--constraint") + 1] == f"{ROOT}/constraints.txt"
    assert argv[argv.index("--editable") + 1] == str(ROOT)
    assert argv[-1] == "boto3==1.44.5"


def sbatch_options(path: Path) -> dict[str, str]:
    return dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)", path.read_text(), re.M))


def ray_starts(recorded: list[list[str]]) -> tuple[list[str], list[list[str]], set[tuple[str, ...]]]:
    """The srun calls that started Ray: the head's, the workers', and the environments they ran in."""
    starts = [(c, tuple(recorded[i + 1])) for i, c in enumerate(recorded) if c[0] == "srun" and "start" in c]
    [head] = [c for c, _ in starts if "--head" in c]
    return head, [c for c, _ in starts if "--head" not in c], {env for _, env in starts}


def node_of(srun: list[str]) -> str:
    return srun[srun.index("-w") + 1]


def test_slurm_script_starts_ray_over_the_allocation_and_launches_the_sweep_against_it(tmp_path):
    script = CLUSTER / "slurm" / "sweep.sbatch"
    options = sbatch_options(script)
    assert int(options["nodes"]) >= 2 and options["gres"].startswith("gpu:")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text("")
    bin_ = tmp_path / "bin"
    env = stubs(bin_, scontrol="printf 'n1\\nn2\\nn3\\n'",
                srun='[[ " $* " == *" hostname "* ]] && echo 127.0.0.1; exit 0',
                ray="echo node_1; echo node_2; echo node_3",  # `ray status`: three nodes joined
                tvae_sweep="exit 0")
    with socket.socket() as head:  # the head's GCS port, which the script waits for
        head.bind(("127.0.0.1", 0))
        head.listen()
        port = head.getsockname()[1]
        env.update(HOME=str(tmp_path), SLURM_JOB_ID="7", SLURM_JOB_NODELIST="n[1-3]", SLURM_CPUS_PER_TASK="16",
                   SLURM_SUBMIT_DIR=str(ROOT), TVAE_SWEEP_VENV=str(venv), TVAE_SWEEP_STORAGE="/shared/storage",
                   RAY_PORT=str(port))
        proc = subprocess.run(["bash", str(script), "search_spaces/smoke.yaml", "--set", "search.num_trials=8"],
                              capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Ray cluster: 3 of 3 nodes" in proc.stdout
    recorded = calls(bin_)
    head_start, workers, envs = ray_starts(recorded)
    address = f"127.0.0.1:{port}"
    assert node_of(head_start) == "n1" and f"--port={port}" in head_start
    assert sorted(map(node_of, workers)) == ["n2", "n3"]
    assert all(f"--address={address}" in c and "--num-gpus=4" in c for c in workers)
    assert envs == {("env", "RAY_AUTH_MODE=token")}  # token authentication on every node
    [launch] = [c for c in recorded if c[0] == "tvae-sweep"]
    assert launch[1:] == ["launch", "search_spaces/smoke.yaml", "--address", address,
                          "--set", "storage.path=/shared/storage", "--set", "storage.shared=true",
                          "--set", "search.num_trials=8"]
    assert not list((tmp_path / ".ray").glob("*.token"))  # the job's token is removed at its end
