"""Training on a Kubernetes cluster: an Indexed Job of N pods (one worker each) behind a headless
Service, each pod's TF_CONFIG made from its index, and restarts that resume.

    python -m tfx_transformer.training.cluster render --workers 4 --image IMAGE \\
        --claim training-data -- --data prepared:/data/wmt14 --output /data/runs/wmt14 --preset base
    python -m tfx_transformer.training.cluster run -- python train.py ...     (in each pod)

`render` prints the Service and Job (kubectl apply -f -). In each pod, `run` reads the pod's
index (JOB_COMPLETION_INDEX, which Kubernetes sets in an Indexed Job), writes TF_CONFIG naming
every worker by its stable host name (`JOB-INDEX.SERVICE`), adds --resume when the run folder
already holds a run (the pod was restarted: it continues from the last checkpoint), and runs
the command. The run folder and the prepared corpus live on a volume that every pod mounts
(ReadWriteMany): the chief writes the run, every worker restores its checkpoints and reads its
own shards of the corpus.
"""

import argparse
import json
import os
import shlex
import sys

INDEX_VARIABLE = "JOB_COMPLETION_INDEX"
PORT = 2222


def worker_hosts(job, service, workers, port=PORT):
    """The workers' addresses: an Indexed Job's pod i is reachable as JOB-i.SERVICE."""
    return [f"{job}-{index}.{service}:{port}" for index in range(workers)]


def tf_config(index, job, service, workers, port=PORT):
    """TF_CONFIG of the pod with index `index`: every worker, and which one this is (worker 0 is
    the chief: it writes the run folder)."""
    if not 0 <= index < workers:
        raise ValueError(f"pod index {index} is not among the {workers} workers.")
    return {"cluster": {"worker": worker_hosts(job, service, workers, port)},
            "task": {"type": "worker", "index": index}}


def render(job, workers, image, train_args, claim, mount="/data", port=PORT, cpu="4",
           memory="16Gi", gpus=0, service=None):
    """The headless Service and Indexed Job (YAML) that run `train.py train_args` on `workers`
    pods. Restarts: a failed pod is restarted in place (same index and host name) and resumes;
    the others, whose collectives fail with it, are restarted as well and resume together."""
    service = service or job
    command = ["python", "-m", "tfx_transformer.training.cluster", "run", "--", "python",
               "train.py", *train_args]
    resources = {"cpu": cpu, "memory": memory}
    if gpus:
        resources["nvidia.com/gpu"] = str(gpus)
    env = [{"name": "WORKERS", "value": str(workers)}, {"name": "JOB_NAME", "value": job},
           {"name": "SERVICE_NAME", "value": service}, {"name": "WORKER_PORT", "value": str(port)}]
    documents = [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": service},
         "spec": {"clusterIP": "None", "selector": {"job-name": job},
                  "ports": [{"name": "worker", "port": port}]}},
        {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": job},
         "spec": {
             "completionMode": "Indexed", "completions": workers, "parallelism": workers,
             "backoffLimit": 10 * workers,
             "template": {"metadata": {"labels": {"job-name": job}}, "spec": {
                 "subdomain": service,
                 "restartPolicy": "OnFailure",
                 "containers": [{
                     "name": "worker", "image": image, "command": command, "env": env,
                     "ports": [{"containerPort": port}],
                     "resources": {"requests": resources, "limits": resources},
                     "volumeMounts": [{"name": "shared", "mountPath": mount}],
                 }],
                 "volumes": [{"name": "shared", "persistentVolumeClaim": {"claimName": claim}}],
             }},
         }},
    ]
    return "---\n".join(to_yaml(document) for document in documents)


def to_yaml(value, indent=0):
    """YAML of dicts, lists and scalars (JSON's scalars are YAML's), in block style."""
    pad = " " * indent
    if isinstance(value, dict):
        lines = []
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{key}:\n{to_yaml(item, indent + 2)}")
            else:
                lines.append(f"{pad}{key}: {json.dumps(item)}")
        return "\n".join(lines) + ("\n" if indent == 0 else "")
    lines = []
    for item in value:
        if isinstance(item, (dict, list)) and item:
            nested = to_yaml(item, indent + 2).lstrip()
            lines.append(f"{pad}- {nested}")
        else:
            lines.append(f"{pad}- {json.dumps(item)}")
    return "\n".join(lines)


def pod_environment(environ, command):
    """(environment, command) for this pod: TF_CONFIG from its index, and --resume added when
    the command's --output already holds a run."""
    try:
        index = int(environ[INDEX_VARIABLE])
        workers = int(environ["WORKERS"])
    except (KeyError, ValueError):
        raise ValueError(
            f"{INDEX_VARIABLE} and WORKERS must be set (Kubernetes sets {INDEX_VARIABLE} in an "
            "Indexed Job; the rendered Job sets WORKERS)."
        ) from None
    job = environ.get("JOB_NAME", "train")
    config = tf_config(index, job, environ.get("SERVICE_NAME", job), workers,
                       int(environ.get("WORKER_PORT", PORT)))
    command = list(command)
    output = option_value(command, "--output")
    if output and os.path.exists(os.path.join(output, "config.json")) and "--resume" not in command:
        command.append("--resume")
    return {**environ, "TF_CONFIG": json.dumps(config)}, command


def option_value(command, name):
    for index, word in enumerate(command):
        if word == name and index + 1 < len(command):
            return command[index + 1]
        if word.startswith(name + "="):
            return word.split("=", 1)[1]
    return None


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    rest = []
    if "--" in argv:
        argv, rest = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    parser = argparse.ArgumentParser(prog="python -m tfx_transformer.training.cluster",
                                     description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    shown = commands.add_parser("render", help="print the Service and Indexed Job (YAML); the "
                                "train.py flags follow --")
    shown.add_argument("--workers", type=int, required=True)
    shown.add_argument("--image", required=True, help="a container image with this package")
    shown.add_argument("--claim", required=True, help="the PersistentVolumeClaim (ReadWriteMany) "
                       "holding the prepared corpus and the run folder")
    shown.add_argument("--job", default="train")
    shown.add_argument("--mount", default="/data")
    shown.add_argument("--cpu", default="4")
    shown.add_argument("--memory", default="16Gi")
    shown.add_argument("--gpus", type=int, default=0)
    commands.add_parser("run", help="in a pod: set TF_CONFIG from its index, then run the "
                        "command that follows --")
    args = parser.parse_args(argv)
    if args.command == "render":
        if args.workers < 1:
            parser.error("--workers must be at least 1")
        print(render(args.job, args.workers, args.image, rest, args.claim, args.mount,
                     cpu=args.cpu, memory=args.memory, gpus=args.gpus), end="")
        return 0
    if not rest:
        parser.error("run: give the command after --, e.g. -- python train.py ...")
    environment, command = pod_environment(os.environ, rest)
    print(f"TF_CONFIG={environment['TF_CONFIG']}\n{shlex.join(command)}", flush=True)
    os.execvpe(command[0], command, environment)


if __name__ == "__main__":
    sys.exit(main())
