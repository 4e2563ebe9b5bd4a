"""The static files of the HTML report (:mod:`lightning_cam.predict.report`)."""
