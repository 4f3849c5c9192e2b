"""`python train.py`: the training job, by concern.

- options.py: `TrainOptions`, every option of a run (saved in config.json);
- cli.py: the flags of `train.py` -> TrainOptions -> `loop.run`;
- loop.py: `run`, the job: prepare, train, finish (on either engine, importing neither);
- epochs.py: each epoch's training batches, the next made in a thread while one trains;
- backends.py: which engine runs the job (the Keras backend's), and `Placement`;
- trainer.py: the TensorFlow engine: `setup` and `Trainer` (model, optimizer, checkpoints,
  compiled steps); distribute.py: its tf.distribute strategies and each replica's batches;
- jax_trainer.py: the JAX engine: `setup` (devices, keras.distribution) and `Trainer` (a jitted
  stateless step); checkpoints.py: its .npz checkpoints, written in a thread;
- losses.py, optimization.py: the label-smoothed loss and the paper's Adam schedule;
- stats.py, summaries.py, progress.py: counters, TensorBoard event files (tensorboard's protos,
  no TensorFlow), the console;
- timing.py: where a run's time goes, and when --time-budget stops training;
- selection.py: which weights a run keeps (best on validation, averaged checkpoints);
- resume.py: what a run folder allows (no overwriting, --resume rules).

Public: `options.TrainOptions` and `loop.run` (the job from Python), `trainer.Trainer`,
`jax_trainer.Trainer` and `distribute.distributed_batches` (a loop of one's own, as the
benchmarks write), `losses` and `optimization`. Nothing is imported here, so that a JAX run
loads no TensorFlow.
"""
