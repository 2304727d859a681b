"""Research tooling, apart from the product's verbs: the trainers (``train-codec``, ``train-entropy``,
``train-refiner``), their data rules (training pool, held-out refusal, cached latents, checkpoints) and the
research benches (``bench-entropy``, ``bench-refine``). The CLI reaches them only through lazy imports."""
