"""The tf.data steps CSV lines and TFRecord records share: files (shuffled, interleaved,
decompressed, sharded by row) to items, items to batches (shuffled in blocks)."""
import tensorflow as tf

from mtrec.config.paths import compression

# tf.data traces map functions with AutoGraph unless told not to. mtrec's have no
# tensor-dependent Python control flow, and converting them took ~4 s per training run.
plain = tf.autograph.experimental.do_not_convert

# Items read from one file before the next, when several files are read at once.
RUN_LENGTH = 256


def read_files(data_config, files: list[str], read, shuffle: bool, seed=None,
               shard=None, whole: bool = False) -> tf.data.Dataset:
    """The items of all files: read(path, compression_type) -> Dataset of one file's items.
    Several files are read at once when shuffling (their order reshuffled each epoch), else
    in order. shard (n, i): keep every n-th item of each file from the i-th, so that n
    readers split the rows whatever order each one shuffled the files into.
    whole: read gives each file as one element, the vector of all its items; the result
    is then a Dataset of vectors of items, which batch() cuts as it cuts single items."""
    paths = tf.data.Dataset.from_tensor_slices(
        (files, [compression(data_config, f) for f in files]))
    if shuffle and len(files) > 1:
        paths = paths.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    cycle = min(len(files), 4) if shuffle else 1

    def one(path, compression_type):
        items = read(path, compression_type)
        if not whole:
            return items.shard(*shard) if shard else items
        if shard:
            n, i = shard
            items = items.map(plain(lambda vector: vector[i::n]))
        # Runs of RUN_LENGTH items, as the interleave below takes from a file of items.
        return items.rebatch(RUN_LENGTH) if cycle > 1 else items

    if cycle == 1:
        return paths.flat_map(one)
    return paths.interleave(one, cycle_length=cycle, block_length=1 if whole else RUN_LENGTH,
                            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def batch(items: tf.data.Dataset, batch_size: int, shuffle: bool, shuffle_buffer_size: int,
          seed=None, drop_remainder: bool = False) -> tf.data.Dataset:
    """Vectors of batch_size items (the last one of the data shorter, unless
    drop_remainder drops it). Shuffling permutes whole blocks of shuffle_buffer_size items
    at once (vectorised), then re-cuts them: per-row shuffling cost ~25% of training
    throughput. Items that come as vectors (read_files(whole=True)) are cut into the same
    blocks and batches."""
    whole = items.element_spec.shape.rank == 1

    def cut(dataset, size, drop=False):
        return (dataset.rebatch(size, drop_remainder=drop) if whole
                else dataset.batch(size, drop_remainder=drop))

    if shuffle and shuffle_buffer_size > batch_size:
        return cut(items, shuffle_buffer_size).map(
            plain(lambda block: tf.random.shuffle(block, seed=seed))).rebatch(
                batch_size, drop_remainder=drop_remainder)
    return cut(items, batch_size, drop_remainder)
