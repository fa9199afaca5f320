"""The traced train loop: several steps per `tf.function` call, each a forward pass,
the weighted losses, and the sparse (embedding) and dense optimizer updates; under a
strategy each step runs on every replica."""
import tensorflow as tf

from mtrec.training.job import Job
from mtrec.training.optimizers import table_shards, trained


def max_steps_per_call(train_config, strategy) -> int:
    """How many steps one call of the train loop runs at most."""
    if strategy is not None and not isinstance(strategy, tf.distribute.ParameterServerStrategy):
        # Collectives get their instance keys once per tf.function call, and one key's
        # all-gather must keep its shape; the sparse (IndexedSlices) table gradients change
        # shape with every batch of tags and at an epoch's short batch: one step per call.
        return 1
    return train_config.steps_per_loop or min(train_config.log_step_count_steps, 100)


def next_chunk(step, num_steps, steps_per_loop, train_config) -> int:
    """Steps until the next log line, checkpoint or the end, capped by steps_per_loop."""
    bounds = [steps_per_loop]
    for every in (train_config.log_step_count_steps, train_config.save_checkpoints_steps,
                  train_config.save_summary_steps):
        if every:
            bounds.append(every - step % every)
    if num_steps:
        bounds.append(num_steps - step)
    return max(1, min(bounds))


def make_train_loop(job: Job, train_config, strategy=None, online=None):
    """tf.function(iterator, n) running up to n steps -> (steps done, loss sums, total loss
    sum, bad rows, all losses finite). Under a strategy each step is `strategy.run` of
    the same step on every replica, with losses averaged over the replicas.
    online (eval_config.eval_online, training/online.py): the tuple also ends with what
    online.tensors gives of each step's outputs, concatenated over the steps (under a
    strategy, of the first local replica's batches)."""
    model = job.model
    # A table a parameter-server strategy split is trained shard by shard (each a plain
    # variable on its ps), so its gradients are IndexedSlices of the shard's own rows.
    # train_config.freeze_gradient: trained() leaves out the variables no step updates.
    tables, dense_variables = trained([part for table in model.feature_groups.table_variables
                                       for part in table_shards(table)],
                                      model.trainable_variables, train_config)
    clip = train_config.gradient_clipping_by_norm
    num_losses = len(job.loss_names)
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    # mixed_precision fp16: one dynamic loss scale for the dense and the table gradients.
    scaler = job.loss_scale

    def step_fn(features, side):
        # Dynamic tables (ev_params): rows for the batch's new ids, before the forward pass.
        features = model.feature_groups.dynamic.train_rows(
            features, job.global_step, model.feature_groups.tables, job.sparse_optimizer)
        with tf.GradientTape() as tape:
            outputs = model(features, training=True)
            seen = online.tensors(outputs, side, features) if online is not None else {}
            losses = model.weighted_losses(outputs, side)
            total = tf.add_n(list(losses.values()))
            if model.losses:
                total += tf.add_n(model.losses)
            # Gradients are summed over replicas: each contributes 1/replicas of the mean.
            scaled = total / replicas if replicas > 1 else total
            if scaler is not None:
                scaled = scaler.scale_loss(scaled)
        dense = dense_variables
        grads = tape.gradient(scaled, tables + dense)
        if scaler is not None:
            grads, grads_finite = scaler.unscale(grads)
        # A NaN raw value can leave the loss finite (on AVX-512, TF's fused CPU kernels
        # turn it into 0 in the forward pass) but not the gradients, so check those too:
        # the step then reports a non-finite total like a NaN loss.
        dense_grads = [g for g in grads[len(tables):] if g is not None]
        if scaler is not None:
            # fp16 overflow skips the step and halves the scale; at scale 1 it is a NaN.
            total = tf.where(grads_finite | (scaler.scale > 1.0), total, float("nan"))
        elif dense_grads:
            total = tf.where(tf.math.is_finite(tf.linalg.global_norm(dense_grads)), total,
                             float("nan"))
        reduced = False
        if clip > 0:
            if replicas > 1:
                # Clip the global gradient: sum over replicas first (the optimizers then
                # skip their own sum; Keras always sums, so it gets 1/replicas of it).
                context = tf.distribute.get_replica_context()
                present = [i for i, g in enumerate(grads) if g is not None]
                summed = context.all_reduce(tf.distribute.ReduceOp.SUM,
                                            [grads[i] for i in present])
                for i, g in zip(present, summed):
                    grads[i] = g
                reduced = True
            grads, _ = tf.clip_by_global_norm(grads, clip)
            if reduced:
                grads = grads[:len(tables)] + [g / replicas if g is not None else None
                                               for g in grads[len(tables):]]
        def apply():
            job.sparse_optimizer.apply(zip(grads[:len(tables)], tables), reduced=reduced)
            job.dense_optimizer.apply_gradients(
                [(g, v) for g, v in zip(grads[len(tables):], dense) if g is not None])
            return tf.constant(True)

        if scaler is None:
            apply()
        else:
            tf.cond(grads_finite, apply, lambda: tf.constant(False))
            scaler.update(grads_finite)
        job.global_step.assign_add(1)
        return tf.stack(list(losses.values())), total, seen

    # The step has no tensor-dependent Python control flow: AutoGraph converting it (and
    # every layer it calls) only costs tracing time, about 2 s per model.
    step_fn = tf.autograph.experimental.do_not_convert(step_fn)
    if strategy is None:
        run = step_fn
        count_bad = lambda bad: bad  # noqa: E731
    else:
        mean = tf.distribute.ReduceOp.MEAN

        def run(features, side):
            # Dynamic tables (ev_params): every replica's new ids get rows once, first.
            model.feature_groups.dynamic.assign_replicas(
                strategy, features, job.global_step, model.feature_groups.tables,
                job.sparse_optimizer)
            tower_losses, total, seen = strategy.run(step_fn, args=(features, side))
            seen = tf.nest.map_structure(
                lambda v: strategy.experimental_local_results(v)[0], seen)
            return (strategy.reduce(mean, tower_losses, axis=None),
                    strategy.reduce(mean, total, axis=None), seen)

        def count_bad(bad):
            return strategy.reduce(tf.distribute.ReduceOp.SUM, bad, axis=None)

    @tf.function
    def train_loop(iterator, n):
        loss_sums = tf.zeros([num_losses])
        total_sum = tf.constant(0.0)
        bad_rows = tf.constant(0, tf.int64)
        done = tf.constant(0)
        finite = tf.constant(True)
        arrays = {} if online is None else tf.nest.map_structure(
            lambda spec: tf.TensorArray(spec.dtype, size=0, dynamic_size=True,
                                        element_shape=spec.shape), online.spec)
        for _ in tf.range(n):
            element = iterator.get_next_as_optional()
            if not element.has_value():
                break
            features, side, bad = element.get_value()
            tower_losses, total, seen = run(features, side)
            if online is not None:
                arrays = tf.nest.map_structure(lambda a, v: a.write(done, v), arrays, seen)
            loss_sums += tower_losses
            total_sum += total
            bad_rows += count_bad(bad)
            done += 1
            if not tf.math.is_finite(total):
                finite = tf.constant(False)
                break
        if online is not None:
            return (done, loss_sums, total_sum, bad_rows, finite,
                    tf.nest.map_structure(lambda a: a.concat(), arrays))
        return done, loss_sums, total_sum, bad_rows, finite

    return train_loop


def make_runner(job: Job, train_config, cluster, online=None):
    """run(iterator, n) -> (steps done, loss sums, total loss sum, bad rows, all finite)
    of n steps. Under PSStrategy the chief schedules the n steps on the workers through
    TF's ClusterCoordinator, in calls of about n / workers steps that each free worker
    takes (a lost worker's calls are retried on the others), and waits for all of them."""
    train_loop = make_train_loop(job, train_config, cluster.strategy, online)
    coordinator = cluster.coordinator
    if coordinator is None:
        return lambda iterator, n: train_loop(iterator, tf.constant(n))

    def run(iterator, n):
        per_call = max(1, -(-n // cluster.num_workers))
        calls = []
        for start in range(0, n, per_call):
            calls.append(coordinator.schedule(
                train_loop, args=(iterator, tf.constant(min(per_call, n - start)))))
        coordinator.join()
        results = [call.fetch() for call in calls]
        done, loss_sums, total, bad, finite = zip(*results)
        return (sum(int(d) for d in done), tf.constant(sum(loss_sums)),
                tf.constant(sum(float(t) for t in total)), sum(int(b) for b in bad),
                all(bool(f) for f in finite))

    return run
