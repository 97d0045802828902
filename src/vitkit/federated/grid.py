"""An in-process Flower ``Grid``: the ServerApp's strategy and N ClientApps in one Python process, no ray.

Flower's simulation engine needs ray (a large dependency, kept out of ``make test``); its SuperLink needs
processes. This grid implements Flower's own ``Grid`` interface the simplest way — ``push_messages`` calls
the ClientApp of the destination node at once, with that node's persistent ``Context`` — so Flower's
strategies (sampling, aggregation, failure handling) run exactly as they do elsewhere. A ClientApp that
raises produces an error reply, as Flower's engines do, and the strategy aggregates the rest.
"""

from __future__ import annotations

import logging
import traceback
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

log = logging.getLogger(__name__)

CLIENT_APP_EXCEPTION = 300  # error code for a ClientApp that raised (Flower uses its own codes per engine)


class InProcessGrid(Grid):
    """``num_nodes`` virtual SuperNodes (node ids 1..N, partition ids 0..N-1) running ``client_app``."""

    def __init__(self, client_app: ClientApp, num_nodes: int, run_id: int = 1) -> None:
        if num_nodes < 1:
            raise ValueError(f"need at least one node, got {num_nodes}")
        self.client_app = client_app
        self._run = Run.create_empty(run_id)
        self.contexts = {
            i + 1: Context(run_id=run_id, node_id=i + 1, node_config={"partition-id": i, "num-partitions": num_nodes},
                           state=RecordDict(), run_config={})
            for i in range(num_nodes)
        }
        self._replies: dict[str, Message] = {}

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            if node not in self.contexts:
                raise ValueError(f"message to unknown node {node}; nodes are {sorted(self.contexts)}")
            try:
                reply = self.client_app(msg, self.contexts[node])
            except Exception as e:  # a failing site: an error reply, the round goes on
                log.info("node %d failed: %s", node, e)
                reason = f"{type(e).__name__}: {e}"
                log.debug("%s", traceback.format_exc())
                reply = Message(Error(code=CLIENT_APP_EXCEPTION, reason=reason), reply_to=msg)
            key = str(uuid.uuid4())
            self._replies[key] = reply
            ids.append(key)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))


SERVER_NODE_ID = 0  # the ServerApp's node id in the messages it creates


@contextmanager
def server_identity(run_id: int = 1) -> Iterator[None]:
    """Flower stamps every Message with the identity of the task creating it (set by its own runtimes
    when they start a ServerApp); set it for the duration of an in-process run and restore it afterwards."""
    saved = {}
    for key in ("run_id", "node_id", "task_id"):
        try:
            saved[key] = getattr(TaskIdentity, key)
        except RuntimeError:
            saved[key] = None
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, SERVER_NODE_ID, 0
    try:
        yield
    finally:
        for key, value in saved.items():
            setattr(TaskIdentity, key, value)


__all__ = ["InProcessGrid", "server_identity"]
