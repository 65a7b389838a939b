"""A procedural toy world where DreamRelation runs on CPU, and the oracle that measures it.

- ``world``: two coloured sprites acting out NTU-style mutual actions, with free masks, trajectories
  and captions, and the dataset-folder writer;
- ``oracle``: tracks the prompted subjects in any video, names their relation and computes the
  metrics (relation accuracy, subject fidelity, appearance leakage, temporal consistency, toy FVD);
- ``features``: the tiny video network behind the toy FVD (shipped weights in ``weights/``);
- ``video_io``: lossless MP4 for the tiny frames.

See docs/toyworld.md. Submodules are imported explicitly (``from dreamrelation.toyworld import world``)
so that importing the package stays cheap and ``python -m dreamrelation.toyworld.oracle`` runs cleanly.
"""
