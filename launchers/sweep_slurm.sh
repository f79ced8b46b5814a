#!/usr/bin/env bash
# Example: the same sweep as one SLURM job array, one array task per cell (submitit_slurm).
# The submitting process waits until the whole array has finished: run this inside tmux or
# screen; with hydra.launcher.wait=false it returns at once, and a job that SLURM starts after the
# array writes the summary and the report. Timeouts and preemptions requeue a task, which resumes from its prediction shards;
# re-running the command after a partial failure runs only the cells that are not done.
#   bash launchers/sweep_slurm.sh hydra.launcher.partition=gpu hydra.launcher.gpus_per_node=4 \
#       hydra.launcher.tasks_per_node=4 model=qwen2_5_vl_7b model.path=/data/Qwen2.5-VL-7B-Instruct \
#       benchmark=nextqa_mc benchmark.data_dir=/data/nextqa benchmark.video_dir=/data/nextqa/videos
# To try it on one workstation: `bash launchers/slurm_up.sh` starts a single-node cluster
# (and prints the SLURM_CONF to export); `bash launchers/slurm_down.sh` stops it.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec bash "$repo/launchers/run.sh" -m hydra/launcher=slurm \
    outro.layer=1,2,4 outro.alpha=0.1,0.3 "$@"
