"""Component online update (部件在线更新): bureaus edit their departments' components."""
