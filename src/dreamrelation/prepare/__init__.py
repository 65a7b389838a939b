"""From raw videos to dataset folders: NTU RGB+D ingestion, clip preprocessing, subject masks.

``ntu`` picks clips of the paper's relations from a user's NTU copy; ``videos`` fits any clips to a
backbone's frame and size rules (masks kept aligned); ``masking`` writes subject masks with a detector
and a segmenter (``segmenters``: Grounding DINO + SAM) whose identity rules are the pure functions
of ``tracking``.
"""
