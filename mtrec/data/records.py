"""The tf.data steps CSV lines and TFRecord records share: files (shuffled, interleaved,
decompressed, sharded by row) to items, items to batches (shuffled in blocks)."""
import tensorflow as tf

from mtrec.config.paths import compression

# tf.data traces map functions with AutoGraph unless told not to. mtrec's have no
# tensor-dependent Python control flow, and converting them took ~4 s per training run.
plain = tf.autograph.experimental.do_not_convert


def read_files(data_config, files: list[str], read, shuffle: bool, seed=None,
               shard=None) -> tf.data.Dataset:
    """The items of all files: read(path, compression_type) -> Dataset of one file's items.
    Several files are read at once when shuffling (their order reshuffled each epoch), else
    in order. shard (n, i): keep every n-th item of each file from the i-th, so that n
    readers split the rows whatever order each one shuffled the files into."""
    paths = tf.data.Dataset.from_tensor_slices(
        (files, [compression(data_config, f) for f in files]))
    if shuffle and len(files) > 1:
        paths = paths.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)

    def one(path, compression_type):
        items = read(path, compression_type)
        return items.shard(*shard) if shard else items

    cycle = min(len(files), 4) if shuffle else 1
    if cycle == 1:
        return paths.flat_map(one)
    return paths.interleave(one, cycle_length=cycle, block_length=256,
                            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def batch(items: tf.data.Dataset, batch_size: int, shuffle: bool, shuffle_buffer_size: int,
          seed=None, drop_remainder: bool = False) -> tf.data.Dataset:
    """Vectors of batch_size items (the last one of the data shorter, unless
    drop_remainder drops it). Shuffling permutes whole blocks of shuffle_buffer_size items
    at once (vectorised), then re-cuts them: per-row shuffling cost ~25% of training
    throughput."""
    if shuffle and shuffle_buffer_size > batch_size:
        return items.batch(shuffle_buffer_size).map(
            plain(lambda block: tf.random.shuffle(block, seed=seed))).rebatch(
                batch_size, drop_remainder=drop_remainder)
    return items.batch(batch_size, drop_remainder=drop_remainder)
