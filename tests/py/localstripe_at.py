"""Runs localstripe with its state file at $LOCALSTRIPE_STATE.

localstripe keeps its store in memory and pickles it to one fixed path,
/tmp/localstripe.pickle, shared by every instance on the machine. Tests run
several instances in parallel and restart some of them, so each gets its
own state file: a restart without --from-scratch resumes where it stopped.

localstripe answers a missing object with 404 and no error code; Stripe
answers `"code": "resource_missing"`, and the engine treats only that as
"deleted" (any other 404 is a misconfiguration and retried). The launcher
adds the code to localstripe's missing-object answers (`UserError(404,
'Not Found')`, raised by its retrieve and delete) so it behaves as Stripe
does; other 404s stay as they are.
"""
import os
import pickle
import sys

from localstripe import errors, resources

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

_user_error_init = errors.UserError.__init__


def user_error_init(self, code, message=None, contents=None):
    _user_error_init(self, code, message, contents)
    if code == 404 and message == "Not Found":
        self.body["error"]["code"] = "resource_missing"


errors.UserError.__init__ = user_error_init

from localstripe import server  # noqa: E402  (after the patch)

sys.argv = ["localstripe"] + sys.argv[1:]
server.start()
