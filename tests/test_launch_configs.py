"""The launch/ recipes: each config goes through accelerate's own launch-time parsing, the FSDP config wraps
a layer class our model has, and the Slurm script hands each node its rank, the rendezvous and resume."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
import yaml
from accelerate import FullyShardedDataParallelPlugin
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils.launch import prepare_multi_gpu_env
from transformers import XLMRobertaConfig

from ner_accel.modeling.heads import XLMRobertaForTokenClassification

LAUNCH = Path(__file__).resolve().parents[1] / "launch"
CONFIGS = ["cpu", "single_gpu", "multi_gpu", "multi_node", "fsdp"]


def launch_args(name: str, *extra: str):
    """What `accelerate launch --config_file launch/<name>.yaml ... -m ner_accel.train` resolves to."""
    parser = launch_command_parser()
    args = parser.parse_args(["--config_file", str(LAUNCH / f"{name}.yaml"), *extra, "-m", "ner_accel.train"])
    return _validate_launch_command(args)[0]


@pytest.mark.parametrize("name", CONFIGS)
def test_config_is_a_few_commented_keys_that_accelerate_accepts(name):
    text = (LAUNCH / f"{name}.yaml").read_text()
    keys = yaml.safe_load(text)
    assert 4 <= len(keys) + len(keys.get("fsdp_config", {})) <= 20
    assert text.startswith("#") and f"launch/{name}.yaml" in text  # says what it is for and how to launch it
    launch_args(name)  # raises on unknown keys or inconsistent settings


def test_configs_resolve_to_the_intended_modes():
    cpu, single, multi, nodes, fsdp = (launch_args(name) for name in CONFIGS)
    assert cpu.multi_gpu and cpu.num_processes == 2 and cpu.use_cpu and cpu.mixed_precision == "no"
    assert not single.multi_gpu and single.num_processes == 1 and single.mixed_precision == "bf16"
    assert multi.multi_gpu and multi.num_machines == 1 and multi.mixed_precision == "bf16"
    assert nodes.multi_gpu and nodes.num_machines == 2 and nodes.num_processes == 16
    assert fsdp.use_fsdp and fsdp.mixed_precision == "bf16"
    # Command-line flags win over the file: this is how slurm.sbatch sets each node's rank and the rendezvous.
    node = launch_args("multi_node", "--machine_rank", "1", "--main_process_ip", "node-a")
    assert node.machine_rank == 1 and node.main_process_ip == "node-a"


def test_fsdp_config_shards_fully_and_wraps_a_layer_class_of_our_model(monkeypatch):
    env = prepare_multi_gpu_env(launch_args("fsdp"))
    for key, value in env.items():
        if key.startswith(("FSDP_", "ACCELERATE_USE_FSDP")):
            monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()  # built from the launcher's environment, as in each process
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True  # full sharding
    assert plugin.state_dict_type.name == "FULL_STATE_DICT"  # one plain state dict, not per-rank shards
    assert plugin.transformer_cls_names_to_wrap == ["XLMRobertaLayer"]
    tiny = XLMRobertaConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, num_labels=7
    )
    model = XLMRobertaForTokenClassification(tiny)
    plugin.set_auto_wrap_policy(model)  # raises if no module of the model has that class
    wrapped = plugin.auto_wrap_policy.keywords["transformer_layer_cls"]
    assert {cls.__name__ for cls in wrapped} == {"XLMRobertaLayer"}
    assert sum(type(m) in wrapped for m in model.modules()) == 2  # one unit per encoder layer


# ---------------------------------------------------------------------------------------------------------------
# Slurm: srun, scontrol and accelerate replaced by stubs that record what they are asked to do


def stub(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def slurm(tmp_path):
    bin_dir, record = tmp_path / "bin", tmp_path / "record.txt"
    bin_dir.mkdir()
    # srun runs its command once per node with that node's SLURM_NODEID, as Slurm does with one task a node.
    stub(bin_dir, "srun", 'while [[ $1 == --* ]]; do shift; done\n'
                          'for n in $(seq 0 $((SLURM_NNODES - 1))); do SLURM_NODEID=$n "$@"; done\n')  # fmt: skip
    stub(bin_dir, "scontrol", f'[ "$1" = show ] && printf "node-a\\nnode-b\\n" || echo "scontrol $*" >> {record}\n')
    stub(bin_dir, "accelerate", f'echo "accelerate $*" >> {record}\n')
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242", "SLURM_NNODES": "2",
           "SLURM_JOB_NODELIST": "node-[a-b]", "SLURM_GPUS_ON_NODE": "4", "OUTPUT_DIR": str(tmp_path / "out")}  # fmt: skip

    def submit() -> list[str]:
        record.unlink(missing_ok=True)
        script = LAUNCH / "slurm.sbatch"
        subprocess.run(["bash", str(script), "--languages", "de"], cwd=LAUNCH.parent, env=env, check=False)
        return record.read_text().splitlines()

    return submit, tmp_path / "out" / "slurm-4242"


def test_slurm_script_starts_one_launcher_per_node_with_its_rank_and_the_rendezvous(slurm):
    submit, _ = slurm
    launchers = submit()
    assert len(launchers) == 2
    for rank, line in enumerate(launchers):
        assert line.startswith("accelerate launch --config_file launch/multi_node.yaml ")
        assert f"--machine_rank {rank} " in line
        assert "--num_machines 2 --num_processes 8 " in line
        assert "--main_process_ip node-a --main_process_port 24242 " in line
        assert " -m ner_accel.train --output-dir " in line
        assert "--run-name slurm-4242 --languages de" in line and "--resume" not in line


def test_slurm_script_resumes_and_requeues_an_unfinished_checkpointed_run(slurm):
    submit, run_dir = slurm
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "latest").write_text("step-0000100\n")
    lines = submit()
    assert all("--resume latest" in line for line in lines if line.startswith("accelerate"))
    assert lines[-1] == "scontrol requeue 4242"  # stopped by SIGTERM before the end: run again, resume
    (run_dir / "metrics.json").write_text("{}")
    assert not any(line.startswith("scontrol") for line in submit())  # finished: no requeue
