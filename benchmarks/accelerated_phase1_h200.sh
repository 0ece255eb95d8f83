#!/usr/bin/env bash
# Phase 1 of two reproduce.py rows on one accelerator machine (an H200 lent through this
# project's device tool: Keras and JAX, no TensorFlow), six processes sharing the GPU:
#   mnist   cnnh, --tag=-h200-self3-keep98: 3 seeds, phase 1 then 3 self-training rounds
#   cifar10 cnnh, --tag=-h200-w32:           3 seeds, supervised (the protocol's 5,000 images)
# It expects the data in .devdata (mnist.npz; cifar10.npz from accelerated_phase1.py pack)
# and Keras' wheels in .whl (python3 -m pip download --no-deps --only-binary=:all:
# --python-version 3.12 --platform manylinux_2_28_x86_64 -d .whl keras==<ours> namex optree),
# both carried, and leaves one tar per seed and the log in $OUT. Then, here:
# tar xf each into runs/reproduce and run reproduce.py with the same recipe and --tag (see
# accelerated_phase1.py). Epochs can be lowered for a dry run (MNIST_EPOCHS=1 ...).
set -u
MNIST_EPOCHS=${MNIST_EPOCHS:-100}
MNIST_SELF_EPOCHS=${MNIST_SELF_EPOCHS:-20}
MNIST_SELF=${MNIST_SELF:-10000}
CIFAR_EPOCHS=${CIFAR_EPOCHS:-500}
LIMIT_S=${LIMIT_S:-470}
WORK=${WORK:-runs/reproduce}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export KERAS_BACKEND=${KERAS_BACKEND:-jax} XLA_PYTHON_CLIENT_PREALLOCATE=false
if [ -d .whl ] && ! python3 -c "import keras" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
export TFHASH_DATA_DIR=$PWD/.devdata PYTHONUNBUFFERED=1
python3 -c "import jax, keras; print('jax', jax.__version__, jax.devices(), 'keras', keras.__version__)" \
  || export KERAS_BACKEND=torch  # Keras on PyTorch where it cannot run on JAX
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
run="timeout $LIMIT_S python3 benchmarks/accelerated_phase1.py train --work-dir $WORK"
for s in 0 1 2; do
  $run --dataset mnist --seed "$s" --tag=-h200-self3-keep98 --pretrain-epochs "$MNIST_EPOCHS" \
    --self-train "$MNIST_SELF" --self-train-epochs "$MNIST_SELF_EPOCHS" \
    --self-train-rounds 3 --self-train-keep 0.98 >"/tmp/mnist$s.log" 2>&1 &
  $run --dataset cifar10 --seed "$s" --tag=-h200-w32 --backbone-width 32 \
    --precision mixed_bfloat16 --augment crop_flip_cutout --pretrain-epochs "$CIFAR_EPOCHS" \
    >"/tmp/cifar$s.log" 2>&1 &
done
wait
for s in 0 1 2; do
  tar cf "$OUT/mnist-seed$s.tar" -C "$WORK" "mnist-cnnh-h200-self3-keep98/seed$s"
  tar cf "$OUT/cifar10-seed$s.tar" -C "$WORK" "cifar10-cnnh-h200-w32/seed$s"
done
for f in /tmp/mnist?.log /tmp/cifar?.log; do echo "== $f"; grep -v "^Epoch" "$f" | tail -n 4; done
cat /tmp/mnist?.log /tmp/cifar?.log >"$OUT/train.log"
ls -la "$OUT"
