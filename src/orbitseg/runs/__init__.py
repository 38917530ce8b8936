"""What training leaves on disk, and its one owner.

* :mod:`orbitseg.runs.checkpoint`: the checkpoint format (write, read, validate, float16 export,
  a checkpoint -> network and preprocessing);
* :mod:`orbitseg.runs.layout`: the run-folder and model-folder layout (file names, fold discovery,
  ``run.json`` / ``model.json`` reading, which checkpoints a ``--model`` path means).

``train`` writes through these modules; ``predict``, ``report`` and ``export`` read through them.
Nothing else spells a checkpoint key or a run-folder file name.
"""
