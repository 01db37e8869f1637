"""``runtime view``: an interactive OpenCV viewer for the cascade's outputs.

Four small parts, each with one job:

* :mod:`.state`: the key map and the viewer's state machine (pure, no display);
* :mod:`.render`: the picture as a pure function of state and images (no display);
* :mod:`.cache`: cascade results computed on one background thread, with prefetch;
* :mod:`.window` and :mod:`.app`: the OpenCV window and the loop that ties them together.

The window needs a GUI build of OpenCV (``opencv-python``); the runtime itself
depends only on ``opencv-python-headless`` (see :func:`.window.gui_problem`).
"""
