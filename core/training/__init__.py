"""Training: label files, data sets and splits, extraction, the training loop and evaluation.

Modules:
    labels          the three label formats and the restricted unpickler
    datasets        format detection, matching labels with video files, person ids
    splits          grouped and official splits
    extraction      per-clip extraction with the serving stages, storage keys and configuration
    extraction_run  the data set manifest and the extraction loop
    data            stored clips to batches
    features        frozen backbone features, computed once per clip and stored
    backbone        the installed backbone and its stored features, ready for a run
    loop            the end-to-end model and the training loop
    checkpoints     checkpoints and early stopping
    evaluation      metrics through the serving code
    run             one run from data set to bundle
    resume          resuming a run and registering its bundle

Nothing here is imported by the serving path, so importing `core.training` loads nothing.
"""
