"""Runs localstripe with its state file at $LOCALSTRIPE_STATE.

localstripe keeps its store in memory and pickles it to one fixed path,
/tmp/localstripe.pickle, shared by every instance on the machine. Tests run
several instances in parallel and restart some of them, so each gets its
own state file: a restart without --from-scratch resumes where it stopped.
"""
import os
import pickle
import sys

from localstripe import resources

STATE = os.environ["LOCALSTRIPE_STATE"]


def load(store):
    try:
        with open(STATE, "rb") as f:
            saved = pickle.load(f)
    except FileNotFoundError:
        return
    store.clear()
    store.update(saved)


def dump(store):
    tmp = STATE + ".tmp"
    with open(tmp, "wb") as f:
        pickle.dump(store, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, STATE)


resources.Store.try_load_from_disk = load
resources.Store.dump_to_disk = dump

from localstripe import server  # noqa: E402  (after the patch)

sys.argv = ["localstripe"] + sys.argv[1:]
server.start()
