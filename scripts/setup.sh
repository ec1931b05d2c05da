#!/usr/bin/env bash
# Idempotent set-up: installs what is missing (Debian packages, a project-local virtual
# environment with PyTorch 2.11.0) and does nothing when everything is present.
# Used by both README commands and by CI. Safe to run again at any time.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

TORCH_VERSION=2.11.0
VENV="$root/.venv"
APT_PACKAGES=(cmake ninja-build ccache g++ libyaml-cpp-dev libspdlog-dev catch2 libcli11-dev
              libsentencepiece-dev nlohmann-json3-dev libssl-dev)
# Python packages the project's own scripts use (tests, the PyTorch reference, exports).
# transformers (no extras) and sentencepiece: `ablate export hf` and its test load the export;
# tensorboard: `ablate export tensorboard` (torch.utils.tensorboard) and its reader (docs/interop.md).
PY_PACKAGES=(numpy safetensors "transformers==5.24.0" sentencepiece "tensorboard==2.21.0")
# What `import torch` needs besides the CUDA wheels (from torch's own METADATA).
TORCH_PY_DEPS=(filelock "typing-extensions>=4.10.0" "setuptools<82" "sympy>=1.13.3" "networkx>=2.5.1" jinja2 "fsspec>=0.8.5")
# The CUDA libraries libtorch_cuda.so links that a CUDA 13.0 toolkit install does not provide.
TORCH_CUDA_EXTRAS=(nvidia-cusparselt-cu13==0.8.0 nvidia-nvshmem-cu13==3.4.5 "nvidia-cufile==1.15.1.6.*")
SYSTEM_CUDA=/usr/local/cuda

log() { printf '[setup] %s\n' "$*" >&2; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Gloo's headers, for trainers/distributed.cpp only (the torch wheel ships none; Gloo itself is
# compiled into libtorch_cpu). Unpacked from Debian's package into .gloo/, never installed, never
# linked: docs/distributed.md explains the choice and its risks.
GLOO_DEB_VERSION="0.0~git20220518.5b14351-3"
gloo_dir="$root/.gloo"
if [[ ! -f $gloo_dir/.version || "$(cat "$gloo_dir/.version")" != "$GLOO_DEB_VERSION" ]]; then
  log "unpacking Gloo headers (libgloo-dev $GLOO_DEB_VERSION) into $gloo_dir"
  tmp="$(mktemp -d)"
  if ! (cd "$tmp" && apt-get download -qq "libgloo-dev=$GLOO_DEB_VERSION" >/dev/null 2>&1); then
    SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
    $SUDO apt-get update -qq
    (cd "$tmp" && apt-get download -qq "libgloo-dev=$GLOO_DEB_VERSION" >/dev/null) \
      || { log "cannot download libgloo-dev=$GLOO_DEB_VERSION from Debian"; exit 1; }
  fi
  rm -rf "$gloo_dir"
  dpkg -x "$tmp"/libgloo-dev_*.deb "$gloo_dir"
  rm -rf "$tmp"
  [[ -f $gloo_dir/usr/include/gloo/algorithm.h ]] || { log "libgloo-dev has no gloo/algorithm.h"; exit 1; }
  echo "$GLOO_DEB_VERSION" > "$gloo_dir/.version"
fi

# The stamp records what was installed; a change of this script's pins reinstalls.
want="torch=$TORCH_VERSION py=${PY_PACKAGES[*]} deps=${TORCH_PY_DEPS[*]} cuda=${TORCH_CUDA_EXTRAS[*]}"
if [[ -x $SYSTEM_CUDA/bin/nvcc && -e $SYSTEM_CUDA/lib64/libcudart.so.13 ]]; then mode=system-cuda; else mode=wheels; fi
want="$want mode=$mode"
stamp="$VENV/.ablate-setup"
if [[ -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi

start=$(date +%s)
python=${PYTHON:-python3}
# A venv left half-made by an interrupted set-up (no pip) is made again.
if [[ ! -x $VENV/bin/python ]] || ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
  rm -rf "$VENV"
  "$python" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
if [[ $mode == system-cuda ]]; then
  # The system CUDA 13.0 toolkit stands in for the nvidia-* wheels (several GB); only the
  # three libraries it lacks come from PyPI. See docs/install.md for the measurements.
  log "installing torch==$TORCH_VERSION (CUDA 13.0 build) against the system CUDA at $SYSTEM_CUDA"
  "${pip[@]}" --no-deps "torch==$TORCH_VERSION" "${TORCH_CUDA_EXTRAS[@]}"
  "${pip[@]}" "${TORCH_PY_DEPS[@]}"
else
  log "no CUDA 13.0 toolkit at $SYSTEM_CUDA: installing torch==$TORCH_VERSION with its CUDA wheels"
  "${pip[@]}" "torch==$TORCH_VERSION"
fi
"${pip[@]}" "${PY_PACKAGES[@]}"
"$VENV/bin/python" -c "import torch; assert torch.__version__.startswith('$TORCH_VERSION'), torch.__version__" \
  || { log "torch import check failed"; exit 1; }
echo "$want" > "$stamp"
log "done in $(( $(date +%s) - start )) s; venv size $(du -sh "$VENV" | cut -f1)"
