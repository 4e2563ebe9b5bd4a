"""Tools around the engine: image files in, pictures out.

``image_io`` (reading images and folders, atomic writes), ``viz`` (colormaps, overlays, grids,
boxes, labels), ``classifier`` (:class:`ClassifierExplainer`: a classifier and image files, the
engine behind ``lightning-cam explain``).
"""
