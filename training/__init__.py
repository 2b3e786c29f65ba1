"""tuneline's training side: the shapes world, small models, a recorded train loop, sweeps.

    python -m training train --out runs/mysweep/baseline --set batchnorm=true
    python -m training sweep --preset demo          # runs/demo/<setting>/ and runs/demo/report.md
    python -m training report runs/demo

Modules: `world` (the built-in data set), `config` (TrainConfig), `models`,
`datasets` (world / CIFAR-10 / ImageFolder), `train` (the loop), `selectivity`
(the Leavitt & Morcos regularizer), `rotation` and `rotate` (the rotation control),
`sweep` (presets), `report`, `checkpoints`, `ddp`.
"""
