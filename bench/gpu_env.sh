# Sourced by the GPU-host scripts (bench/gpu_check.sh, experiments/decoupling/natural/gpu_sweeps.sh):
# points the dynamic loader at the host's LibTorch (system python3's torch 2.11 cu130), its NVIDIA
# wheels and the carried non-torch libraries (build-bench/gpu-libs), and sets PY and ABLATE.
PY=${PYTHON:-python3}
TORCH_LIB=$($PY -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
NV=$($PY -c 'import glob, os, site; print(":".join(sorted(glob.glob(os.path.join(site.getsitepackages()[0], "nvidia", "*", "lib")))))' || true)
export LD_LIBRARY_PATH="$TORCH_LIB:$NV:$PWD/build-bench/gpu-libs:${LD_LIBRARY_PATH:-}"
ABLATE=$PWD/build-bench/ablate
