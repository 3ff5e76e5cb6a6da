from twisted.application.service import ServiceMaker

multirealm = ServiceMaker(
    "multirealm",
    "multirealm.tap",
    "A federated chat server: one realm of a multirealm network.",
    "multirealm",
)
