# Shared by the GPU scripts (source it): the data-folder check and the nvidia-smi sampler.

# need_data_dirs SCRIPT DATA_DIR FOLDER...: exit 2 with one line naming the first FOLDER missing from DATA_DIR.
need_data_dirs() {
    local script=$1 data=$2 folder
    shift 2
    for folder in "$@"; do
        [ -d "$data/$folder" ] || { echo "$script: $data/$folder: no such folder" >&2; exit 2; }
    done
}

# start_gpu_sampler FILE: time, GPU % and MiB in use, every second, into FILE, where nvidia-smi is found.
gpu_sampler=
start_gpu_sampler() {
    command -v nvidia-smi > /dev/null || return 0
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits -l 1 > "$1" &
    gpu_sampler=$!
}

stop_gpu_sampler() {
    [ -z "$gpu_sampler" ] || kill "$gpu_sampler" 2> /dev/null || true
    gpu_sampler=
}
