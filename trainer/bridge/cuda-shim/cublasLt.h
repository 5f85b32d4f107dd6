#pragma once
// See README.
typedef struct cublasLtContext* cublasLtHandle_t;
