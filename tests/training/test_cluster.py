"""The Kubernetes example: the rendered Service and Indexed Job, and each pod's TF_CONFIG from
its index (what `python -m tfx_transformer.training.cluster run` sets before train.py)."""

import json

import pytest
import yaml

from tfx_transformer.training.cluster import main, pod_environment, render


def rendered(workers=4, args=("--data", "prepared:/data/wmt", "--output", "/data/runs/a")):
    return list(yaml.safe_load_all(render("wmt", workers, "registry/tfx:1", list(args), "shared",
                                          gpus=1)))


def test_the_job_runs_one_pod_per_worker_behind_a_headless_service():
    service, job = rendered()
    assert service["kind"] == "Service" and service["spec"]["clusterIP"] == "None"
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 4, 4)
    pod = spec["template"]
    # DNS names JOB-INDEX.SERVICE exist only when the pods' subdomain is the Service's name and
    # the Service selects them.
    assert pod["spec"]["subdomain"] == service["metadata"]["name"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    container = pod["spec"]["containers"][0]
    assert container["command"][:5] == ["python", "-m", "tfx_transformer.training.cluster", "run", "--"]
    assert container["command"][5:] == ["python", "train.py", "--data", "prepared:/data/wmt",
                                        "--output", "/data/runs/a"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "shared"


def test_each_replica_gets_its_own_tf_config_from_its_pod_index(tmp_path):
    _, job = rendered(4)
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item["value"] for item in container["env"]}
    configs = []
    for index in range(4):
        environment, command = pod_environment({**env, "JOB_COMPLETION_INDEX": str(index)},
                                               container["command"][5:])
        configs.append(json.loads(environment["TF_CONFIG"]))
        assert "--resume" not in command  # no run in /data/runs/a yet
    hosts = [f"wmt-{i}.wmt:2222" for i in range(4)]
    for index, config in enumerate(configs):
        assert config == {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
    with pytest.raises(ValueError, match="not among the 4 workers"):
        pod_environment({**env, "JOB_COMPLETION_INDEX": "4"}, ["python", "train.py"])
    with pytest.raises(ValueError, match="JOB_COMPLETION_INDEX and WORKERS must be set"):
        pod_environment({}, ["python", "train.py"])


def test_a_restarted_pod_resumes_the_run(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    env = {"JOB_COMPLETION_INDEX": "1", "WORKERS": "2"}
    _, command = pod_environment(env, ["python", "train.py", "--output", str(tmp_path)])
    assert command[-1] == "--resume"
    _, command = pod_environment(env, ["python", "train.py", f"--output={tmp_path}", "--resume"])
    assert command.count("--resume") == 1


def test_render_from_the_command_line(capsys):
    assert main(["render", "--workers", "2", "--image", "img", "--claim", "c", "--", "--steps",
                 "10"]) == 0
    documents = list(yaml.safe_load_all(capsys.readouterr().out))
    assert documents[1]["spec"]["completions"] == 2
    assert documents[1]["spec"]["template"]["spec"]["containers"][0]["command"][-2:] == ["--steps", "10"]
