"""Groups of users; addons declare theirs in ``security/groups.yaml``."""

from core import api, fields, models


class Groups(models.Model):
    _name = "res.groups"
    _description = "User group"
    _order = "name"
    _sql_constraints = [
        ("xml_id_unique", "unique(xml_id)", "A group with this external id exists.")
    ]

    name = fields.Char(required=True)
    xml_id = fields.Char("External id", index=True, help="e.g. base.group_user")
    implied_ids = fields.Many2many(
        "res.groups",
        "res_groups_implied_rel",
        "gid",
        "hid",
        string="Implied groups",
        help="Members of this group are members of these groups too.",
    )
    user_ids = fields.Many2many("res.users", "res_groups_users_rel", "gid", "uid", string="Users")

    def _register_hook(self):
        """Create or update the groups the loaded addons declare."""
        super()._register_hook()
        declared = self.pool.security.groups
        existing = {
            g.xml_id: g for g in self.search([("xml_id", "in", [d.xml_id for d in declared])])
        }
        for declaration in declared:
            group = existing.get(declaration.xml_id)
            if group is None:
                existing[declaration.xml_id] = self.create(
                    {"name": declaration.name, "xml_id": declaration.xml_id}
                )
            elif group.name != declaration.name:
                group.name = declaration.name
        for declaration in declared:
            implied = [existing[x].id for x in declaration.implied if x in existing]
            missing = [x for x in declaration.implied if x not in existing]
            if missing:
                raise ValueError(
                    f"Group '{declaration.xml_id}' implies unknown group(s): {', '.join(missing)}."
                )
            group = existing[declaration.xml_id]
            if set(group.implied_ids.ids) != set(implied):
                group.implied_ids = implied

    @api.model
    def _closure(self, group_ids: list[int]) -> set[int]:
        """The groups and every group they imply, transitively."""
        result, frontier = set(), set(group_ids)
        while frontier:
            result |= frontier
            frontier = set(self.browse(list(frontier)).mapped("implied_ids").ids) - result
        return result
