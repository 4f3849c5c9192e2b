"""`python train.py`: the training job, by concern.

- options.py: `TrainOptions`, every option of a run (saved in config.json);
- cli.py: the flags of `train.py` -> TrainOptions -> `loop.run`;
- loop.py: `run`, the job: prepare, train, finish;
- trainer.py: `Trainer`, the model, optimizer, checkpoints and compiled steps;
- distribute.py: tf.distribute strategies and the batches of each replica;
- losses.py, optimization.py: the label-smoothed loss and the paper's Adam schedule;
- stats.py, progress.py: counters, TensorBoard summaries, the console;
- resume.py: what a run folder allows (no overwriting, --resume rules).

Public: `options.TrainOptions` and `loop.run` (the job from Python), `trainer.Trainer` and
`distribute.distributed_batches` (a loop of one's own, as the benchmarks write), `losses` and
`optimization`. Nothing is imported here, so that `training.losses` and `training.optimization`
(plain Keras) load without TensorFlow, as on a JAX machine.
"""
