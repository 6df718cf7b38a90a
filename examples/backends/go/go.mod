module example.com/appgw-emulator/orders-backend

go 1.19
