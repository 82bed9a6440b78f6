"""Applying the trained suite to an observation: ``hpcmass export-model`` packs the fold models, the
image geometry and a calibrated uncertainty into one directory; ``hpcmass predict`` bins an X-ray
event file exactly as the training images were binned and predicts log10 M500c with an interval.
"""
