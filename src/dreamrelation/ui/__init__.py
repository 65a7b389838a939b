"""`dreamrelation ui`: the web UI, data -> train -> generate -> compare (``pip install -e ".[ui]"``).

:mod:`~dreamrelation.ui.actions` holds what each button does, as calls into the library the command line
uses; :mod:`~dreamrelation.ui.jobs` runs long work in background threads, one job per output folder;
:mod:`~dreamrelation.ui.app` lays the page out with Gradio (imported only when the UI starts).
"""
