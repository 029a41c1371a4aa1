"""The names the engine understands, importable without torch.

The spec validator and the terminal app need these lists but must start fast, so they live here
rather than in the torch modules; each torch module checks its own registry against them in tests.
"""

MODELS = ("lenet5", "resnet20", "resnet56", "resnet110", "vgg16")
NORMS = ("batch", "layer")
DATASETS = ("digits", "mnist", "fashion-mnist", "emnist", "cifar10", "cifar100", "svhn", "imagefolder")
AUGMENTATIONS = ("crop", "hflip", "vflip", "rotate", "colorjitter", "mixup", "cutmix", "noise")
LOSSES = ("kl", "reverse-kl", "symmetric-kl", "brier", "hard")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "constant")
INITS = ("random", "teacher-init", "interpolate")
TEACHER_CACHE = ("auto", "off")
COMPILE_MODES = ("off", "default", "max-autotune", "reduce-overhead")  # reduce-overhead: CUDA graphs
# Extra distillation data: "<dataset>:N" appends N unlabelled images of another data set,
# "noise:p" replaces each distillation image by uniform noise with probability p,
# "tensors:PATH" appends a user's uint8 image tensor (e.g. GAN samples).
EXTRA_KINDS = ("noise", "tensors") + tuple(d for d in DATASETS if d not in ("digits", "imagefolder"))
