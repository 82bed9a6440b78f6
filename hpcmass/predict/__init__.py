"""Applying the trained suite to an observation: ``hpcmass export-model`` packs the fold models, the
image geometry, a calibrated uncertainty and the domain checks' measured thresholds into one directory;
``hpcmass predict`` bins an X-ray event file exactly as the training images were binned, checks that it
looks like them (exposure, field coverage, a cluster at all) and predicts log10 M500c with an interval.
"""
