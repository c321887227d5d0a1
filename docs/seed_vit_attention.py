"""Trains the seed ViT (72 px, 12x12 = 144 patches, one layer, 4 heads) on CIFAR-10 JPEGs
and writes its attention figures for a few validation images into docs/seed_vit/.

    python docs/seed_vit_attention.py --per-class 2000 --epochs 8 --backend jax
"""

import argparse
import os
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "benchmarks"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--backend", default="jax")
    parser.add_argument("--run", default=str(HERE.parent / "runs" / "seed_vit_cifar"))
    args = parser.parse_args()
    os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np
    from accuracy import DEFAULT_ARCHIVE, extract, subset

    from keras_vitmix import datasets, training, visualize

    cache = pathlib.Path(os.path.expanduser("~/.cache/keras_vitmix"))
    folder = subset(extract(DEFAULT_ARCHIVE, cache), args.per_class, cache)
    model_path = os.path.join(args.run, "model.keras")
    if not os.path.exists(model_path):
        training.train("seed_vit", str(folder), epochs=args.epochs, batch_size=128, learning_rate=2e-3,
                       augment="light", output_dir=args.run, verbose=2)
    model = keras.saving.load_model(model_path)
    ds, info = datasets.load(str(folder), "validation", image_size=72, batch_size=256, shuffle=False)
    chosen = {}  # the first validation image of each of the first classes (the split is class-ordered)
    for batch_images, batch_labels in ds:
        for image, label in zip(np.asarray(batch_images), np.asarray(batch_labels)):
            chosen.setdefault(int(label), image)
        if len(chosen) >= info.num_classes:
            break
    picks = [(label, chosen[label]) for label in sorted(chosen)[:: max(1, info.num_classes // args.images)]]
    for i, (label, image) in enumerate(picks[: args.images]):
        name = info.class_names[label]
        guess = info.class_names[int(np.argmax(model.predict(image[None], verbose=0)[0]))]
        out = HERE / "seed_vit" / f"{i}_{name}"
        paths = visualize.write_attention_figures(model, image.astype("uint8"), out, animate=False, dpi=100)
        print(f"{name} (predicted {guess}):", *paths, sep="\n  ")


if __name__ == "__main__":
    main()
