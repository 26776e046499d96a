"""The SQLAlchemy side: the ``sqlite+tinycortex`` dialect, its pool, statement errors, reflection."""
