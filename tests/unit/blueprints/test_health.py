from user_hasher.app import Service


async def test_healthz_is_ok_whatever_the_phase(service: Service) -> None:
    client = service.quart.test_client()
    while_starting = await client.get("/healthz")
    service.lifecycle.begin_shutdown("test")
    while_draining = await client.get("/healthz")
    for response in (while_starting, while_draining):
        assert response.status_code == 200
        assert response.content_type == "application/json"
        assert await response.get_json() == {"status": "ok"}


async def test_readyz_is_503_before_startup_completes(service: Service) -> None:
    response = await service.quart.test_client().get("/readyz")
    assert response.status_code == 503
    assert await response.get_json() == {"status": "starting"}


async def test_readyz_is_200_after_startup_and_503_once_draining(service: Service) -> None:
    async with service.quart.test_app() as test_app:
        client = test_app.test_client()
        response = await client.get("/readyz")
        assert response.status_code == 200
        assert await response.get_json() == {"status": "ready"}

        service.lifecycle.begin_shutdown("test")
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert await response.get_json() == {"status": "draining"}
