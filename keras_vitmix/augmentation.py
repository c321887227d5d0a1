"""The training split's augmentation, as Keras preprocessing layers run inside tf.data
(`keras_vitmix.datasets.load(..., augment=)`)."""


def augmenter(info, strength, seed):
    """Keras preprocessing layers, run inside tf.data on uint8-range float images."""
    import keras
    import tensorflow as tf

    height, width = info.image_shape[:2]
    pad = max(1, height // 8)
    crop = keras.layers.RandomCrop(height, width, seed=seed)
    flip = keras.layers.RandomFlip("horizontal", seed=seed) if info.flip_invariant else None
    rand_augment = keras.layers.RandAugment(value_range=(0, 255), seed=seed) if strength == "strong" else None
    if rand_augment is not None:
        bincount_histogram(rand_augment.equalization)

    def light(images, labels):
        images = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])  # zeros, as the standard CIFAR crop
        images = crop(images, training=True)
        if flip is not None:
            images = flip(images, training=True)
        if rand_augment is not None:
            images = rand_augment(images, training=True)
        return images, labels

    if strength != "strong":
        return light
    mixup = keras.layers.MixUp(seed=seed)
    cutmix = keras.layers.CutMix(seed=seed)
    num_classes = info.num_classes

    def strong(images, labels):
        images, labels = light(images, labels)
        data = {"images": images, "labels": tf.one_hot(labels, num_classes)}
        mixed = tf.cond(
            tf.random.uniform((), seed=seed) < 0.5,
            lambda: mixup(data, training=True),
            lambda: cutmix(data, training=True),
        )
        return mixed["images"], mixed["labels"]

    return strong


def bincount_histogram(equalization):
    """Makes a `keras.layers.Equalization` inside tf.data count its histogram with one
    `tf.math.bincount`.

    Keras picks the histogram's form from the global backend, and under JAX it is a
    Python loop over the 256 bins, though inside tf.data the layer computes with
    TensorFlow. There, under JAX, building the "strong" pipeline took 26 s and its first
    batch 4.5 s, against 6 s and 0.5 s under TensorFlow. Same counts either way
    (tests/test_datasets.py checks them); a Keras without the private method is left as
    it is.
    """
    import tensorflow as tf

    if not hasattr(equalization, "_custom_histogram_fixed_width"):
        return

    def histogram(values, value_range, nbins):
        low, high = (tf.cast(v, "float32") for v in value_range)
        scaled = (tf.cast(values, "float32") - low) * (nbins - 1) / (high - low)
        indices = tf.clip_by_value(tf.cast(scaled, "int32"), 0, nbins - 1)
        return tf.math.bincount(tf.reshape(indices, [-1]), minlength=nbins, maxlength=nbins, dtype="int32")

    equalization._custom_histogram_fixed_width = histogram
