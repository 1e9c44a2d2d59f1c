"""The service's table of path params covers every built-in node: a new node type, or a new param that names a
file, must be placed in samflow/serve/policy.py (PATH_PARAMS) before graph runs over HTTP can use it."""

from __future__ import annotations

from samflow.engine.registry import find_node_type, node_types
from samflow.serve.policy import PATH_PARAMS, PATHLIKE_NAME

# Params that name places inside a run's output folder (a graph run over HTTP has none), or no file at all.
NOT_READ = {("masks.write", "dir"), ("masks.write", "name"), ("masks.overlay", "file"), ("lift.write", "dir"),
            ("lift.write", "name"), ("mcc.export", "dir"), ("detect.file", "image_id"),
            ("clip.text", "model")}  # clip.text model: a name, or a config file (checked by the policy itself)


def test_every_builtin_node_type_is_in_the_table():
    builtin = {t for t in node_types() if find_node_type(t).__module__.startswith("samflow.nodes")}
    assert builtin and builtin <= set(PATH_PARAMS), sorted(builtin - set(PATH_PARAMS))


def test_every_path_like_param_is_listed():
    for type_id, listed in PATH_PARAMS.items():
        cls = find_node_type(type_id)
        assert cls is not None, type_id
        fields = set(cls.Params.model_fields)
        assert set(listed) <= fields, (type_id, set(listed) - fields)
        for name, field in cls.Params.model_fields.items():
            text = f"{name} {field.description or ''}".lower()
            looks = PATHLIKE_NAME.search(name) or " file" in text or "checkpoint" in text or "weights" in text
            if looks and "str" in str(field.annotation) and (type_id, name) not in NOT_READ:
                assert name in listed, f"{type_id}.{name} looks like a path: add it to PATH_PARAMS or NOT_READ"
