"""Measuring claims: the pieces every benchmark script and every timed report section share.

* :mod:`.timing`: synchronised timing, precision contexts, interleaved repeats with medians, peak memory.
* :mod:`.machine`: one description of the machine (a dict for the JSON, a line for the table).
* :mod:`.budget`: a time budget, measured training steps, and step counts fitted to what is left.
* :mod:`.probe`: a measurement in a fresh process (the script calls itself).
* :mod:`.pages`: a pool of spawned processes rendering page ranges (the same pages for any worker count).
* :mod:`.tables`: console tables (rich when installed, else plain text) and byte counts.

Nothing here knows a method: these modules import torch and the standard library only.
"""
