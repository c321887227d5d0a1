"""Distillation through attention (DeiT): a frozen teacher's predictions as a second target.

Touvron et al., "Training data-efficient image transformers & distillation through
attention", ICML 2021 (https://arxiv.org/abs/2012.12877): a student ViT gets a second
token, the distillation token, whose head (`head_dist`) learns the teacher's predictions
while the class token's head (`head`) learns the labels; the teacher sees the same
augmented images as the student. At test time the two heads' logits are averaged (as DeiT
and timm do), which is the network's own output here, so nothing changes at inference.

The loss is DeiT's `DistillationLoss`: total = (1 - alpha) * base + alpha * distill, where
base is the run's loss on the (possibly MixUp/CutMix) targets and distill is

- "hard": the cross-entropy of the student's distillation logits against the argmax of
  the teacher's (DeiT's best setting, alpha 0.5);
- "soft": the KL divergence between the softmaxes of teacher and student at temperature
  tau, times tau^2 (`keras.distillation.LogitsDistillation`). Its mean is over the batch
  (Hinton's "batchmean"); DeiT's code divides the summed KL by batch x classes instead, so
  its soft term is this one divided by the class count.

A student that is not a DeiT (no `head_dist`) distills its one set of logits: the input
of its final "predictions" softmax, or the log of its probabilities.

Teachers output probabilities (every model of this package, and keras.applications'):
their logits are taken as the log of the probabilities, which equal the teacher's true
logits up to a constant per image, and softmax (at any temperature) and argmax ignore
such a constant, so both terms are exactly those of the teacher's logits.

The training step itself (augmentation, teacher call, loss) is
`keras_vitmix.device_pipeline.DeviceTrainer(..., teacher=...)`. The module imports only
Keras (and the registry, when a teacher is named).
"""

import os

import keras
from keras import ops

DISTILLATIONS = ("hard", "soft")
# The floor under a teacher's probabilities before the log: far below float32's softmax
# outputs that matter (1e-30 ** (1 / tau) stays negligible for any tau), above 0.
_PROBABILITY_FLOOR = 1e-30


def check_distillation(distillation="hard", alpha=0.5, tau=1.0):
    """Raises a ValueError naming the value when the distillation's settings are invalid."""
    if distillation not in DISTILLATIONS:
        raise ValueError(f"`distillation` must be one of {DISTILLATIONS}. Received: distillation={distillation!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(
            f"`distillation_alpha` (the distillation term's weight) must be in [0, 1]. Received: alpha={alpha!r}"
        )
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not tau > 0:
        raise ValueError(f"`distillation_tau` (the temperature) must be a number > 0. Received: tau={tau!r}")


class DeiTDistillation(keras.distillation.DistillationLoss):
    """DeiT's distillation term, and its mix with the base loss.

    A `keras.distillation.DistillationLoss`, so `compute_loss(teacher, student)` is the
    distillation term alone; `total` mixes it with the base loss as DeiT does. The soft
    term is `keras.distillation.LogitsDistillation` given a `keras.losses.KLDivergence`
    instance: with its default `loss="kl_divergence"` (a string, resolved to the
    function, which its `isinstance(..., KLDivergence)` test does not recognize) Keras
    3.12-3.15 apply the KL divergence to the scaled logits themselves, not to their
    softmaxes.

    Args:
        distillation: "hard" (the teacher's argmax as the label) or "soft" (its softmax
            at temperature `tau`).
        alpha: float in [0, 1], the distillation term's weight; the base loss has
            `1 - alpha`.
        tau: float > 0, the soft term's temperature (unused by "hard", as in DeiT).

    Example:

    >>> loss = DeiTDistillation("soft", alpha=0.5, tau=2.0)
    >>> value = loss.compute_loss([[2.0, 0.0]], [[0.5, 0.1]])

    Reference:
        Touvron et al., 2021, https://arxiv.org/abs/2012.12877
    """

    def __init__(self, distillation="hard", alpha=0.5, tau=1.0):
        check_distillation(distillation, alpha, tau)
        self.distillation, self.alpha, self.tau = distillation, float(alpha), float(tau)
        self.soft = keras.distillation.LogitsDistillation(temperature=self.tau, loss=keras.losses.KLDivergence())

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        """The distillation term (a scalar) from the teacher's and the student's logits."""
        teacher = ops.stop_gradient(ops.cast(teacher_outputs, "float32"))
        student = ops.cast(student_outputs, "float32")
        if self.distillation == "hard":
            labels = ops.argmax(teacher, axis=-1)
            return ops.mean(keras.losses.sparse_categorical_crossentropy(labels, student, from_logits=True))
        return self.soft.compute_loss(teacher, student)

    def total(self, base_loss, teacher_logits, student_logits):
        """(1 - alpha) * `base_loss` + alpha * the distillation term."""
        distilled = self.compute_loss(teacher_logits, student_logits)
        return (1.0 - self.alpha) * ops.cast(base_loss, "float32") + self.alpha * distilled

    def get_config(self):
        return {"distillation": self.distillation, "alpha": self.alpha, "tau": self.tau}


def logits_of(probabilities):
    """Logits of probabilities (a teacher's, or a student's without a logits layer): their
    log, the true logits up to a constant per image, which neither softmax nor argmax sees."""
    return ops.log(ops.maximum(ops.cast(probabilities, "float32"), _PROBABILITY_FLOOR))


def is_deit(network):
    """Whether `network` is a DeiT student: a functional model with `head` and `head_dist`."""
    names = {layer.name for layer in getattr(network, "layers", ())}
    return getattr(network, "inputs", None) is not None and {"head", "head_dist"} <= names


def student_view(network):
    """What a student exposes to distillation: a functional view sharing `network`'s layers.

    The view maps the images to a dict: "probabilities", the network's own output (its
    prediction: for a DeiT, the softmax of its two heads' mean); "distilled", the logits
    the teacher is distilled into (a DeiT's `head_dist`, else the input of a final
    "predictions" softmax); and for a DeiT "class_logits", its `head`, which the labels
    train. One forward pass gives them all, and its variables are the network's.

    Returns None when `network` is neither (a subclassed model, or one whose output is
    not a "predictions" softmax layer): the caller then distills the log of its
    probabilities (`logits_of`), the logits up to a constant.
    """
    if getattr(network, "inputs", None) is None:
        return None
    outputs = {"probabilities": network.outputs[0]}
    if is_deit(network):
        outputs["class_logits"] = network.get_layer("head").output
        outputs["distilled"] = network.get_layer("head_dist").output
    else:
        names = {layer.name for layer in network.layers}
        predictions = network.get_layer("predictions") if "predictions" in names else None
        if not (
            isinstance(predictions, keras.layers.Activation)
            and predictions.activation is keras.activations.softmax
            and predictions.output is network.outputs[0]
        ):
            return None
        outputs["distilled"] = predictions.input
    inputs = network.inputs[0] if len(network.inputs) == 1 else network.inputs  # called as the network is
    return keras.Model(inputs, outputs, name=f"{network.name}_distilled")


def check_teacher(teacher, network):
    """Raises a ValueError when `teacher` cannot teach `network`: not a `keras.Model`, a
    different class count, or a different image size (the teacher sees the student's
    augmented images as they are: nothing is resized behind the run's back)."""
    if not isinstance(teacher, keras.Model):
        raise ValueError(
            "`teacher` must be a keras.Model (or, to `resolve_teacher`, a .keras path or a registered "
            f"name). Received: teacher of type {type(teacher).__name__}"
        )
    classes, student_classes = teacher.output_shape[-1], network.output_shape[-1]
    if classes != student_classes:
        raise ValueError(
            f"The teacher predicts {classes} classes and the student {student_classes}: distillation "
            f"needs the same classes. Received: teacher {teacher.name!r} with output shape {teacher.output_shape}"
        )
    size, student_size = tuple(teacher.input_shape[1:3]), tuple(network.input_shape[1:3])
    if None not in size + student_size and size != student_size:
        raise ValueError(
            f"The teacher takes {size[0]}x{size[1]} images and the student {student_size[0]}x{student_size[1]}: "
            f"the teacher sees the student's images. Received: teacher {teacher.name!r} with input shape "
            f"{teacher.input_shape}"
        )


def resolve_teacher(teacher, weights=None, **overrides):
    """The teacher as a `keras.Model`: given one, a `.keras` file's path, or a registered name.

    Args:
        teacher: a `keras.Model` (returned as is), the path of a `.keras` file (loaded
            without its compile state), or a name of
            `keras_vitmix.applications.list_models()`.
        weights: with a registered name, `create_model`'s `weights` (e.g. "timm", or a
            file of ours); required there, since an untrained teacher teaches noise.
        **overrides: with a registered name, `create_model`'s other arguments (e.g.
            `classes`, `input_shape`).

    Returns:
        A `keras.Model`; `check_teacher` then says whether it can teach the student.
    """
    if isinstance(teacher, keras.Model):
        return teacher
    if not isinstance(teacher, (str, os.PathLike)):
        raise ValueError(
            "`teacher` must be a keras.Model, a .keras path or a registered model name. "
            f"Received: teacher of type {type(teacher).__name__}"
        )
    path = os.fspath(teacher)
    if path.endswith(".keras") or os.sep in path:
        if not os.path.isfile(path):
            raise ValueError(f"The teacher file does not exist. Received: teacher={path!r}")
        return keras.saving.load_model(path, compile=False)
    from keras_vitmix import applications

    if path not in applications.list_models():
        raise ValueError(
            "`teacher` is neither a .keras file nor a registered model name (see "
            f"keras_vitmix.applications.list_models()). Received: teacher={path!r}"
        )
    if weights is None:
        raise ValueError(
            f"A teacher named by its registered name needs trained `weights` (e.g. 'timm' or a file): an "
            f"untrained teacher teaches noise. Received: teacher={path!r}, weights=None"
        )
    return applications.create_model(path, weights=weights, **overrides)
