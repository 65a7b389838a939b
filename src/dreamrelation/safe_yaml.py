"""YAML as configs read it: the safe loader (no code), a key given twice is an error, and anchors
and aliases that expand beyond a sane size (a "billion laughs" bomb) are refused before they are
built. Import-light (yaml only), for `config` and `config_keys` alike."""

from __future__ import annotations

import yaml

__all__ = ["MAX_YAML_NODES", "safe_yaml_load"]


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml's safe loader, except that a key given twice in one mapping is an error (the plain
    loader keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None:
            _refuse_alias_bombs(node)
        return node


#: nodes a config may expand to once its aliases are followed (configs have hundreds)
MAX_YAML_NODES = 100_000


def _refuse_alias_bombs(root: yaml.Node) -> None:
    """Count the nodes the document expands to, each alias counted as often as it is used
    (memoised per node, so the count is cheap even for a "billion laughs" of nested aliases)."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node, depth: int = 0) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if depth > 100:
            raise yaml.YAMLError("nested more than 100 levels deep")
        sizes[id(node)] = 0  # a recursive alias counts once
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child, depth + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k, depth + 1) + size(v, depth + 1) for k, v in node.value)
        if total > MAX_YAML_NODES:
            raise yaml.YAMLError(
                f"its anchors and aliases expand to more than {MAX_YAML_NODES} values (an alias bomb?); "
                "write the settings out"
            )
        sizes[id(node)] = total
        return total

    size(root)


def safe_yaml_load(text: str) -> object:
    """YAML through the safe loader: no code, no duplicate keys, no alias bombs."""
    return yaml.load(text, Loader=_UniqueKeyLoader)
