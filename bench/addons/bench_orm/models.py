from core import fields, models


class Record(models.Model):
    _name = "bench.record"
    _description = "Benchmark record"
    _order = "name, id"

    name = fields.Char(required=True)
    age = fields.Integer(index=True)
    score = fields.Float()
