"""A product's genealogy laid out for an inline SVG: inputs to the left, where it went to the right.

Columns are hops from the product: backward nodes at -depth, forward nodes at +depth, the product
at 0, so every edge runs from what went in to what it went into, left to right. Within a column
nodes are ordered by the row of the node they were reached from (fewer crossings), then by id.
A column shows at most `MAX_PER_COLUMN` nodes and says how many more there are; the tables under
the graph list every node. Laid out here, drawn by the template: no script, no CSP exception.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Literal

from iip.traceability.genealogy import Edge, Genealogy
from iip.traceability.workbench.views import LabelPart, short_label, trace_url

NODE_WIDTH = 200
NODE_HEIGHT = 46
COLUMN_GAP = 64
ROW_GAP = 12
PADDING = 14
MAX_PER_COLUMN = 30

Side = Literal["root", "backward", "forward"]


@dataclass(frozen=True)
class GraphNode:
    identifier: str
    side: Side
    kind: str  # instance, class
    column: int
    x: int
    y: int
    label: tuple[LabelPart, ...]
    href: str


@dataclass(frozen=True)
class GraphMore:
    """The nodes of a column left out of the drawing."""

    count: int
    x: int
    y: int


@dataclass(frozen=True)
class GraphEdge:
    path: str  # SVG path data
    relation: str  # input_of, contained_in
    title: str  # event type and time of the first event joining the two


@dataclass(frozen=True)
class GraphLayout:
    width: int
    height: int
    nodes: list[GraphNode]
    edges: list[GraphEdge]
    more: list[GraphMore]
    node_width: int = NODE_WIDTH
    node_height: int = NODE_HEIGHT

    @property
    def hidden(self) -> int:
        return sum(m.count for m in self.more)


def _columns(root: str, sides: list[tuple[Genealogy, int]]) -> dict[int, list[tuple[str, str, Side]]]:
    """Column number → (identifier, kind, side) of the nodes in it, in the order they are drawn."""
    columns: dict[int, list[tuple[str, str, Side]]] = {0: []}
    root_kind = "instance"
    for genealogy, _sign in sides:
        for node in genealogy.nodes:
            if node.id == root:
                root_kind = node.kind
    columns[0].append((root, root_kind, "root"))
    row: dict[tuple[int, str], int] = {(0, root): 0}
    for genealogy, sign in sides:
        side: Side = "backward" if sign < 0 else "forward"
        by_depth: dict[int, list[tuple[str, str]]] = defaultdict(list)
        for node in genealogy.nodes:
            if node.depth > 0:
                by_depth[node.depth].append((node.id, node.kind))
        for depth in sorted(by_depth):
            column = sign * depth
            previous = sign * (depth - 1)
            via = genealogy.via
            ordered = sorted(
                by_depth[depth],
                key=lambda item: (row.get((previous, via.get(item[0], "")), MAX_PER_COLUMN), item[0]),
            )
            columns[column] = [(identifier, kind, side) for identifier, kind in ordered]
            row.update(((column, identifier), index) for index, (identifier, _kind) in enumerate(ordered))
    return columns


def _curve(x1: int, y1: int, x2: int, y2: int) -> str:
    bend = max(24, abs(x2 - x1) // 2)
    return f"M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}"


def _edge_title(edge: Edge) -> str:
    return f"{edge.event_type} {edge.event_time.strftime('%Y-%m-%d %H:%M')}"


def layout(root: str, backward: Genealogy | None, forward: Genealogy | None) -> GraphLayout:
    """Where each node, edge and "more" mark of the two traces goes."""
    sides = [(g, sign) for g, sign in ((backward, -1), (forward, 1)) if g is not None]
    columns = _columns(root, sides)
    first = min(columns)
    tallest = min(max(len(items) for items in columns.values()), MAX_PER_COLUMN + 1)
    step_x = NODE_WIDTH + COLUMN_GAP
    step_y = NODE_HEIGHT + ROW_GAP
    height = PADDING * 2 + tallest * step_y - ROW_GAP
    width = PADDING * 2 + (max(columns) - first + 1) * step_x - COLUMN_GAP
    nodes: list[GraphNode] = []
    more: list[GraphMore] = []
    position: dict[tuple[Side, str], tuple[int, int]] = {}
    for column in sorted(columns):
        items = columns[column]
        shown = items[:MAX_PER_COLUMN]
        rows = len(shown) + (1 if len(items) > len(shown) else 0)
        x = PADDING + (column - first) * step_x
        top = PADDING + (tallest - rows) * step_y // 2
        for index, (identifier, kind, side) in enumerate(shown):
            y = top + index * step_y
            nodes.append(
                GraphNode(identifier, side, kind, column, x, y, short_label(identifier), trace_url(identifier))
            )
            position[(side, identifier)] = (x, y)
            if side == "root":
                position[("backward", identifier)] = position[("forward", identifier)] = (x, y)
        if len(items) > len(shown):
            more.append(GraphMore(len(items) - len(shown), x, top + len(shown) * step_y))
    edges: list[GraphEdge] = []
    for genealogy, sign in sides:
        edge_side: Side = "backward" if sign < 0 else "forward"
        drawn: set[tuple[str, str]] = set()
        for edge in genealogy.edges:
            source = position.get((edge_side, edge.source))
            target = position.get((edge_side, edge.target))
            if source is None or target is None or (edge.source, edge.target) in drawn:
                continue
            drawn.add((edge.source, edge.target))
            x1, y1 = source[0] + NODE_WIDTH, source[1] + NODE_HEIGHT // 2
            x2, y2 = target[0], target[1] + NODE_HEIGHT // 2
            edges.append(GraphEdge(_curve(x1, y1, x2, y2), edge.relation, _edge_title(edge)))
    return GraphLayout(width, height, nodes, edges, more)
