"""``runtime serve``: a DICOM storage node that runs the cascade on the mammograms a PACS sends it.

:mod:`.policy` decides which objects are accepted, :mod:`.spool` keeps every received image
on disk (fsynced before success is answered) until its results are delivered, :mod:`.sender`
sends the SEG/SR to the destination with C-STORE, and :mod:`.node` ties them together
(association handling, the worker, retries with backoff, resuming the spool on restart).
"""
